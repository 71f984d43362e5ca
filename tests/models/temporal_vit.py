"""A ViT for image time series in the style of Prithvi's: a 3-D patch embedding with one frame
per patch, so the tokens are a class token and then T frames of h x w tokens, (B, 1 + T*h*w, C),
time first. Its position embedding is computed for the input's frames and grid, so it runs at any
frame count and size. `TemporalViT.forward` returns the normed tokens; the builder
`temporal_vit_features` makes one whose forward returns the output of every block as a list."""

import math

import torch
from torch import nn


class PatchEmbed3D(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(
            in_chans, embed_dim, (1, patch_size, patch_size), (1, patch_size, patch_size)
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # B, C, T, h, w
        return self.norm(x.flatten(2).transpose(1, 2))  # B, T*h*w, C


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def position_embedding(frames: int, h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed sine-cosine embedding of (frame, row, column), (1, frames*h*w, dim), time first."""
    t, y, x = torch.meshgrid(torch.arange(frames), torch.arange(h), torch.arange(w), indexing="ij")
    freq = 1.0 / 100.0 ** (torch.arange(dim) / dim)
    pos = torch.sin(t.reshape(-1, 1) * freq * math.pi / 2) + torch.cos(y.reshape(-1, 1) * freq)
    return (pos + torch.sin(x.reshape(-1, 1) * freq + 1.0)).unsqueeze(0)


class TemporalViT(nn.Module):
    def __init__(
        self,
        in_chans: int = 6,
        num_frames: int = 4,
        img_size: int = 64,
        patch_size: int = 16,
        embed_dim: int = 32,
        depth: int = 4,
        num_heads: int = 2,
    ) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.img_size = img_size
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed3D(in_chans, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        _, _, frames, height, width = x.shape
        h, w = height // self.patch_size, width // self.patch_size
        x = self.patch_embed(x)
        x = x + position_embedding(frames, h, w, x.shape[-1]).to(x)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class TemporalViTFeatures(TemporalViT):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        del self.norm  # its forward returns the blocks' outputs: no final norm to train

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.tokens(x)
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out


def temporal_vit_features(**kwargs) -> TemporalViTFeatures:
    return TemporalViTFeatures(**kwargs)
