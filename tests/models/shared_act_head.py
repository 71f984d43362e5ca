"""One activation module for every stage and for the head: the taps are its first three calls,
and its fourth, in the head, comes after them. The head fits a 64x64 input only."""

import torch
from torch import nn


class SharedActHead(nn.Module):
    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 8, 3, 2, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 2, 1)
        self.conv3 = nn.Conv2d(16, 32, 3, 2, 1)
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(32 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.act(self.conv3(x))
        return self.fc2(self.act(self.fc1(x.flatten(1))))
