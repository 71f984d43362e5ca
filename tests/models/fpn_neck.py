"""An encoder (r2 to r16) and an FPN-like neck that reads every level, finest first, then
smooths each level in turn and sums them at r4 (as torchgeo's FarSeg does after its ResNet)."""

import torch
import torch.nn.functional as F
from torch import nn


def conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class FPNNeckNet(nn.Module):
    def __init__(self, in_chans: int = 3, width: int = 8, classes: int = 2):
        super().__init__()
        self.stem = conv(in_chans, width, 2)
        self.stage1 = conv(width, width * 2, 2)
        self.stage2 = conv(width * 2, width * 4, 2)
        self.stage3 = conv(width * 4, width * 8, 2)
        self.lateral = nn.ModuleList(nn.Conv2d(width * m, 16, 1) for m in (2, 4, 8))
        self.smooth = nn.ModuleList(conv(16, 16, 1) for _ in range(3))
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c2 = self.stage1(self.stem(x))
        c3 = self.stage2(c2)
        c4 = self.stage3(c3)
        laterals = [lat(c) for lat, c in zip(self.lateral, (c2, c3, c4), strict=True)]
        levels = [smooth(p) for smooth, p in zip(self.smooth, laterals, strict=True)]
        size = levels[0].shape[-2:]
        return self.head(sum(F.interpolate(p, size=size) for p in levels))
