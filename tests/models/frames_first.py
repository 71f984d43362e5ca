"""An encoder for image time series that takes time before channels, (B, T, C, H, W): a CNN
shared by the frames (the frames folded into the batch), a temporal attention that weighs the
frames per pixel into one map, then a strided conv. Runs at any number of frames.

When the environment names a file in RECORD_INPUTS, each forward appends the shape it receives
to it, and whether it was training (a test reads what the benchmark feeds the model)."""

import os

import torch
from torch import nn


class TemporalAttention(nn.Module):
    """(B, T, C, H, W) -> (B, C, H, W): a softmax over the frames of a per-pixel score."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        scores = self.score(x.flatten(0, 1)).unflatten(0, (b, t))  # B, T, 1, H, W
        return (scores.softmax(dim=1) * x).sum(dim=1)


class FramesFirstEncoder(nn.Module):
    def __init__(self, in_chans: int = 4, num_frames: int = 5, width: int = 8) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.encoder = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.ReLU(),
        )
        self.temporal = TemporalAttention(2 * width)
        self.down = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        record = os.environ.get("RECORD_INPUTS")
        if record:
            with open(record, "a") as f:
                f.write(",".join(map(str, [int(self.training), *x.shape])) + "\n")
        b, t = x.shape[:2]
        frames = self.encoder(x.flatten(0, 1)).unflatten(0, (b, t))  # B, T, C, h, w
        return self.down(self.temporal(frames))
