"""A small CNN that counts its constructions: each appends a line (the default device it was
built on) to the file named by $SCAFFOLD_COUNT_FILE, when that is set."""

import os

import torch
from torch import nn


def block(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class CountedCNN(nn.Module):
    def __init__(self, in_chans: int = 3, width: int = 8):
        super().__init__()
        log = os.environ.get("SCAFFOLD_COUNT_FILE")
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{torch.get_default_device()}\n")
        self.stem = block(in_chans, width, 2)
        self.stage1 = block(width, width * 2, 2)
        self.stage2 = block(width * 2, width * 4, 2)
        self.head = nn.Linear(width * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(x.mean((2, 3)))
