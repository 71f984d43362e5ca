"""A CNN of unpadded ("valid") convolutions: each stage loses a cell, 64 px gives 31, 15, 7."""

import torch
from torch import nn


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 0), nn.BatchNorm2d(cout), nn.ReLU())


class UnpaddedCNN(nn.Module):
    def __init__(self, in_chans: int = 3, width: int = 8):
        super().__init__()
        self.stem = block(in_chans, width)
        self.stage1 = block(width, width * 2)
        self.stage2 = block(width * 2, width * 4)
        self.head = nn.Linear(width * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(x.mean((2, 3)))
