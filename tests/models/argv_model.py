"""A model file written as a training script: it parses the command line when imported."""

import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser(description="train the tiny net")
parser.add_argument("--width", type=int, default=8)
parser.add_argument("--epochs", type=int, default=1)
ARGS = parser.parse_args()
print(f"training for {ARGS.epochs} epoch(s)")


class ScriptNet(nn.Module):
    def __init__(self, in_chans: int = 3, width: int = ARGS.width) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, 2, 1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(self.stem(x))
