"""A small Swin Transformer for video and satellite image time series.

The model follows Video Swin (Liu et al., 2022): a 3D patch embedding over (B, C, T, H, W),
stages of shifted-window 3D self-attention blocks, and patch merging between stages that halves
the spatial size and doubles the width. ``forward`` returns the final normalised feature map
as (B, C, T', H', W'). It has no ``feature_info`` and no timm registration: that is what
``scaffold new-backbone`` adds around it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def window_partition(x: torch.Tensor, window_size: tuple[int, int, int]) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * num_windows, wd * wh * ww, C)."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window_size
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, c)


def window_reverse(
    windows: torch.Tensor, window_size: tuple[int, int, int], b: int, d: int, h: int, w: int
) -> torch.Tensor:
    """(B * num_windows, wd * wh * ww, C) -> (B, D, H, W, C)."""
    wd, wh, ww = window_size
    x = windows.view(b, d // wd, h // wh, w // ww, wd, wh, ww, -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


def clamp_window(
    size: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A window never exceeds the input; no shift along an axis the window covers whole."""
    win = tuple(min(s, w) for s, w in zip(size, window, strict=True))
    sh = tuple(0 if s <= w else t for s, w, t in zip(size, window, shift, strict=True))
    return win, sh  # type: ignore[return-value]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside a 3D window, with a relative position bias."""

    def __init__(self, dim: int, window_size: tuple[int, int, int], num_heads: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        wd, wh, ww = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        coords = torch.stack(
            torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww), indexing="ij")
        ).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        rel[:, :, 0] += wd - 1
        rel[:, :, 1] += wh - 1
        rel[:, :, 2] += ww - 1
        rel[:, :, 0] *= (2 * wh - 1) * (2 * ww - 1)
        rel[:, :, 1] *= 2 * ww - 1
        self.register_buffer("relative_position_index", rel.sum(-1), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        index = self.relative_position_index[:n, :n].reshape(-1)
        bias = self.relative_position_bias_table[index].reshape(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(x)


class SwinBlock3D(nn.Module):
    """One (shifted) window attention block on channels-last (B, D, H, W, C) input."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int, int],
        shift_size: tuple[int, int, int],
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _attention_mask(
        self, d: int, h: int, w: int, win: tuple[int, int, int], shift: tuple[int, int, int], device
    ) -> torch.Tensor:
        img_mask = torch.zeros((1, d, h, w, 1), device=device)
        cnt = 0
        for ds in (slice(-win[0]), slice(-win[0], -shift[0]), slice(-shift[0], None)):
            for hs in (slice(-win[1]), slice(-win[1], -shift[1]), slice(-shift[1], None)):
                for ws in (slice(-win[2]), slice(-win[2], -shift[2]), slice(-shift[2], None)):
                    img_mask[:, ds, hs, ws, :] = cnt
                    cnt += 1
        windows = window_partition(img_mask, win).squeeze(-1)
        mask = windows.unsqueeze(1) - windows.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, _c = x.shape
        win, shift = clamp_window((d, h, w), self.window_size, self.shift_size)
        shortcut = x
        x = self.norm1(x)
        # Pad so that every axis is a whole number of windows.
        pd, ph, pw = ((win[i] - s % win[i]) % win[i] for i, s in enumerate((d, h, w)))
        x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pd))
        _, dp, hp, wp, _ = x.shape
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
            mask = self._attention_mask(dp, hp, wp, win, shift, x.device)
        else:
            mask = None
        windows = self.attn(window_partition(x, win), mask=mask)
        x = window_reverse(windows, win, b, dp, hp, wp)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        x = shortcut + x[:, :d, :h, :w, :].contiguous()
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Halves H and W, doubles the channels: (B, D, H, W, C) -> (B, D, H/2, W/2, 2C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w, _ = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        parts = [x[:, :, i::2, j::2, :] for j in (0, 1) for i in (0, 1)]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class BasicLayer(nn.Module):
    """A stage: ``depth`` blocks with alternating shifts, then an optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: tuple[int, int, int],
        downsample: bool,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        shift = tuple(s // 2 for s in window_size)
        self.blocks = nn.ModuleList(
            SwinBlock3D(dim, num_heads, window_size, (0, 0, 0) if i % 2 == 0 else shift, mlp_ratio)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class PatchEmbed3D(nn.Module):
    """Non-overlapping 3D patches: (B, C, T, H, W) -> (B, E, T/pt, H/ph, W/pw)."""

    def __init__(self, patch_size: tuple[int, int, int], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, t, h, w = x.shape
        pt, ph, pw = self.patch_size
        x = F.pad(x, (0, (pw - w % pw) % pw, 0, (ph - h % ph) % ph, 0, (pt - t % pt) % pt))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class SwinTransformer3D(nn.Module):
    """Swin3D backbone. Input (B, in_chans, num_frames, H, W); output (B, C, T', H/32, W/32)."""

    def __init__(
        self,
        in_chans: int = 6,
        num_frames: int = 4,
        patch_size: tuple[int, int, int] = (2, 4, 4),
        embed_dim: int = 48,
        depths: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: tuple[int, int, int] = (2, 4, 4),
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.patch_embed = PatchEmbed3D(tuple(patch_size), in_chans, embed_dim)
        self.pos_drop = nn.Dropout(0.0)
        self.layers = nn.ModuleList(
            BasicLayer(
                embed_dim * 2**i,
                depth,
                num_heads[i],
                tuple(window_size),
                downsample=i < len(depths) - 1,
                mlp_ratio=mlp_ratio,
            )
            for i, depth in enumerate(depths)
        )
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x))
        x = x.permute(0, 2, 3, 4, 1)  # channels-last for the attention blocks
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return x.permute(0, 4, 1, 2, 3).contiguous()
