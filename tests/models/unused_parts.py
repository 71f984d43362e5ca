"""A small ViT that keeps modules its forward never uses for an optical image: a second
modality's patch embedding, a position embedding it replaces by a fixed one of its own, and a
final norm nothing calls."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class UnusedParts(nn.Module):
    def __init__(self, in_chans: int = 4, radar_chans: int = 2, dim: int = 32, depth: int = 4):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, 8, 8)
        self.radar_embed = nn.Conv2d(radar_chans, dim, 8, 8)  # never called for an image
        self.pos_embed = nn.Parameter(torch.zeros(1, 64, dim))  # replaced in forward
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.fc_norm = nn.LayerNorm(dim)  # never called

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        position = torch.linspace(0, 1, x.shape[1], device=x.device)[None, :, None]
        x = x + position
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out
