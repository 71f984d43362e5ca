"""A small segmentation net: four strided stages, then a 1x1 conv to the class count and
F.interpolate back to the input's size (the resize a function, not a module)."""

import torch
from torch import nn
from torch.nn import functional as F


class SegToClasses(nn.Module):
    def __init__(self, in_chans: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        widths = (in_chans, 8, 16, 24, 32)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1),
                nn.BatchNorm2d(widths[i + 1]),
                nn.ReLU(),
                nn.Conv2d(widths[i + 1], widths[i + 1], 3, 1, 1),
                nn.ReLU(),
            )
            for i in range(4)
        )
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for stage in self.stages:
            x = stage(x)
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)
