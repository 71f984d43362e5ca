"""A ViT whose blocks scale their residual branch by a LayerScale of 1e-5 at initialisation (as
DINOv2's and many foundation models' do): freshly built, each block is nearly the identity, so
neighbouring blocks' tokens differ by about 1e-5 of their size."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.mlp(self.norm(x))


class LayerScaleViT(nn.Module):
    def __init__(self, in_chans: int = 3, dim: int = 32, depth: int = 4) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, 8, 8)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.patch_embed(x).flatten(2).transpose(1, 2))
