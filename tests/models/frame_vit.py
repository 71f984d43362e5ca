"""A factorised temporal ViT for 4-band image time series, (B, T, C, H, W), with the day of year
of each frame, (B, T): a patch embedding shared by the frames, a day-of-year embedding, blocks
of attention over time for each patch, the frames' mean, then blocks of attention over space.
It has no channel parameter (its first conv reads 4 bands) and runs at any number of frames."""

import torch
from torch import nn

BANDS = 4


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class DayOfYear(nn.Module):
    """(B, T) days -> (B, T, dim): sines and cosines of the day, then a linear layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("freq", torch.arange(1, dim // 2 + 1).float() / 365.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, doy: torch.Tensor) -> torch.Tensor:
        angle = doy.float().unsqueeze(-1) * self.freq * 2 * torch.pi  # B, T, dim/2
        return self.proj(torch.cat([angle.sin(), angle.cos()], dim=-1))


class FactorisedTemporalViT(nn.Module):
    def __init__(
        self, num_frames: int = 6, patch_size: int = 4, dim: int = 16, depth: int = 2
    ) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.patch_embed = nn.Conv2d(BANDS, dim, patch_size, patch_size)
        self.day = DayOfYear(dim)
        self.temporal_blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.spatial_blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor, doy: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        tokens = self.patch_embed(x.flatten(0, 1)).flatten(2).transpose(1, 2)  # B*T, N, D
        tokens = tokens.unflatten(0, (b, t)) + self.day(doy)[:, :, None, :]  # B, T, N, D
        n, d = tokens.shape[2:]
        tokens = self.temporal_blocks(tokens.transpose(1, 2).reshape(b * n, t, d))
        tokens = self.spatial_blocks(tokens.reshape(b, n, t, d).mean(dim=2))  # B, N, D
        return self.head(self.norm(tokens).mean(dim=1))
