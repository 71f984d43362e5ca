"""A CNN of stride-2 conv stages after a stride-2 stem, its head a Linear after a mean.

With five stages its deepest stage is a 1x1 map at a 64x64 input (2x2 at 128x128): a level
reached by a strided conv, not a global pool."""

import torch
from torch import nn


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class DeepCNN(nn.Module):
    def __init__(
        self,
        in_chans: int = 3,
        widths: tuple[int, ...] = (24, 48, 96, 192, 384),
        num_classes: int = 10,
    ):
        super().__init__()
        self.stem = conv_bn(in_chans, widths[0], 2)
        chans = [widths[0], *widths]
        self.down = nn.ModuleList(
            conv_bn(a, b, 2) for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.down:
            x = stage(x)
        return self.head(x.mean((2, 3)))


class PooledDeepCNN(DeepCNN):
    """The same stages with a global pool and a flatten before the head, as torchvision's
    classifiers have them: the Linear runs on one cell only, so the whole model runs at any size
    only because the pool makes that cell."""

    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = (24, 48, 96, 192, 384)):
        super().__init__(in_chans, widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.down:
            x = stage(x)
        return self.head(self.flatten(self.pool(x)))


class FlatDeepCNN(DeepCNN):
    """The same stages, the head a Linear on the flattened last map: at 64x64 that map is one
    cell, so the model runs whole at that size only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.down:
            x = stage(x)
        return self.head(x.flatten(1))
