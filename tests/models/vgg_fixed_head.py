"""A VGG-style classifier whose head flattens a fixed 4x4 map: it runs whole at 64x64 only."""

import torch
from torch import nn


def conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]


class FixedHeadVGG(nn.Module):
    def __init__(self, in_chans: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_block(in_chans, 16),  # r2
            *conv_block(16, 32),  # r4
            *conv_block(32, 64),  # r8
            *conv_block(64, 128),  # r16: 4x4 at 64x64
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
