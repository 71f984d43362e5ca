"""A 3D CNN encoder for image time series: (B, C, T, H, W) in, NCTHW stage outputs."""

import torch
from torch import nn


def conv3d(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1), nn.BatchNorm3d(cout), nn.ReLU())


class Temporal3DEncoder(nn.Module):
    def __init__(self, in_chans: int = 3, num_frames: int = 6, width: int = 8) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.stem = conv3d(in_chans, width, (1, 2, 2))
        self.layer1 = conv3d(width, 2 * width, (2, 2, 2))
        self.layer2 = conv3d(2 * width, 4 * width, (1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(self.stem(x)))
