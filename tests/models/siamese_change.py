"""A small siamese change-detection net: one encoder, shared, runs on the two images stacked in
the input's channels (the first half of the channels and the second); the decoder (lateral
convs and a top-down sum) reads the absolute differences of the two encoders' maps, level by
level, and upsamples to a change map."""

import torch
from torch import nn
from torch.nn import functional as F


def conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class Encoder(nn.Module):
    def __init__(self, in_chans: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        chans = (in_chans, *widths)
        self.stages = nn.ModuleList(
            nn.Sequential(conv(chans[i], chans[i + 1], 2), conv(chans[i + 1], chans[i + 1], 1))
            for i in range(len(widths))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


class SiameseChange(nn.Module):
    def __init__(self, in_chans: int = 6, widths: tuple[int, ...] = (8, 16, 24, 32)) -> None:
        super().__init__()
        self.encoder = Encoder(in_chans // 2, widths)
        self.lateral = nn.ModuleList(nn.Conv2d(w, 16, 1) for w in widths)
        self.fuse = conv(16, 16, 1)
        self.classifier = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        first, second = self.encoder(x[:, :half]), self.encoder(x[:, half:])
        diffs = [torch.abs(a - b) for a, b in zip(first, second, strict=True)]
        laterals = [lateral(d) for lateral, d in zip(self.lateral, diffs, strict=True)]
        y = laterals[-1]
        for lateral in reversed(laterals[:-1]):
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
        y = self.fuse(y)
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear")
