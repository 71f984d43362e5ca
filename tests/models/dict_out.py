"""A backbone whose forward already returns its features, as a dict (like detectron2's)."""

import torch
from torch import nn


class DictBackbone(nn.Module):
    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(in_chans, 16, 3, 2, 1), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 24, 3, 2, 1), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv2d(24, 40, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        r2 = self.c1(x)
        r4 = self.c2(r2)
        r8 = self.c3(r4)
        return {"res2": r2, "res4": r4, "res8": r8 * 2, "pooled": r8.mean((2, 3))}
