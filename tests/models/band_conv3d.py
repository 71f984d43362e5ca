"""A per-band patch embedding in the style of Panopticon's: a Conv3d runs over the bands of a
single (B, C, H, W) image (the bands are its depth, one input channel), so any number of bands
goes in; the bands are then averaged into one token per patch, and a ViT's blocks follow. Its
first convolution is 3-D although the input is not a time series."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class BandPatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(1, dim, (1, patch_size, patch_size), (1, patch_size, patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) image, got {tuple(x.shape)}")
        x = self.proj(x.unsqueeze(1)).mean(dim=2)  # B, D, h, w
        return x.flatten(2).transpose(1, 2)


class BandConv3dViT(nn.Module):
    def __init__(self, dim: int = 24, patch_size: int = 8, depth: int = 3) -> None:
        super().__init__()
        self.patch_embed = BandPatchEmbed(dim, patch_size)
        self.blocks = nn.ModuleList([Block(dim) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return x
