"""A siamese change detector: two dates stacked on the channels, `in_chans` bands each; one
encoder reads both, and a small decoder reads the per-stage |a - b| of the two dates."""

import torch
from torch import nn
from torch.nn import functional as F


def stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU())


class SiameseChange(nn.Module):
    def __init__(self, in_chans: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.stages = nn.ModuleList([stage(in_chans, 16), stage(16, 32), stage(32, 64)])
        self.lat = nn.ModuleList([nn.Conv2d(c, 16, 1) for c in (16, 32, 64)])
        self.cls = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, : self.in_chans], x[:, self.in_chans :]
        fused = []
        for s in self.stages:
            a, b = s(a), s(b)
            fused.append(torch.abs(a - b))
        y = self.lat[2](fused[2])
        y = F.interpolate(y, scale_factor=2.0) + self.lat[1](fused[1])
        y = F.interpolate(y, scale_factor=2.0) + self.lat[0](fused[0])
        return F.interpolate(self.cls(y), scale_factor=2.0)
