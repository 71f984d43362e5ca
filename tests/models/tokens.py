"""A token pyramid without a class token, like a Swin that keeps (B, N, C): NLC at r4 and r8."""

import torch
from torch import nn


class TokenStage(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class TokenPyramid(nn.Module):
    def __init__(self, in_chans: int = 3, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_chans, dim, 4, 4)
        self.stage1 = TokenStage(dim)
        self.merge = nn.Conv2d(dim, 2 * dim, 2, 2)
        self.stage2 = TokenStage(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        h, w = x.shape[-2:]
        x = self.stage1(x.flatten(2).transpose(1, 2))  # (B, h*w, C)
        x = self.merge(x.transpose(1, 2).reshape(x.shape[0], -1, h, w))
        return self.stage2(x.flatten(2).transpose(1, 2))
