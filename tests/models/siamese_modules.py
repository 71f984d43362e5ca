"""Change detection: the input holds two images' bands side by side (before, after); one encoder
runs on each, and modules of their own take the absolute difference level by level, which a
1x1 conv fuses. Features of the second image alone ignore the first image's bands."""

import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__()
        self.l1 = nn.Sequential(nn.Conv2d(in_chans, width, 3, 2, 1), nn.ReLU())
        self.l2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU())

    def forward(self, x):
        a = self.l1(x)
        return [a, self.l2(a)]


class Difference(nn.Module):
    def forward(self, a, b):
        return torch.abs(a - b)


class SiameseModules(nn.Module):
    def __init__(self, in_chans: int = 6, width: int = 8) -> None:
        super().__init__()
        self.half = in_chans // 2
        self.encoder = Encoder(self.half, width)
        self.differences = nn.ModuleList([Difference(), Difference()])
        self.fuse = nn.Conv2d(2 * width, 2, 1)

    def forward(self, x):
        before = self.encoder(x[:, : self.half])
        after = self.encoder(x[:, self.half :])
        maps = [d(a, b) for d, a, b in zip(self.differences, before, after, strict=True)]
        return self.fuse(maps[-1])
