"""A CNN that returns logits: its stages are visible only inside (stem r2, stage1 r4, stage2 r8)."""

import torch
from torch import nn


def block(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class SmallCNN(nn.Module):
    def __init__(self, in_chans: int = 4, width: int = 8):
        super().__init__()
        self.stem = block(in_chans, width, 2)
        self.stage1 = nn.Sequential(block(width, width * 2, 2), block(width * 2, width * 2, 1))
        self.stage2 = nn.Sequential(block(width * 2, width * 4, 2), block(width * 4, width * 4, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(self.pool(x).flatten(1))
