"""A token encoder whose patch embedding adds a fixed positional embedding, not interpolated:
it runs at the size it was built for only, and has no constructor parameter for that size."""

import torch
from torch import nn


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos_embed


class FixedPosEncoder(nn.Module):
    def __init__(self, in_chans: int = 3, dim: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.embed = PatchEmbed(in_chans, dim, 8, (8, 8))  # 64x64 inputs only
        self.blocks = nn.Sequential(
            *[nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.embed(x))
