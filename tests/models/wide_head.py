"""Two models on one small encoder (stem r2, stage1 r4, stage2 r8): `WideHead` widens the last map
with a 1x1 conv that holds more parameters than the encoder before pooling (the encoder may go on
past the last tap: a doubt); `BigClassifier` pools first, then a large MLP (a classifier however
large: no doubt)."""

import torch
from torch import nn


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class Encoder(nn.Module):
    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.stem = block(in_chans, 8, 2)
        self.stage1 = nn.Sequential(block(8, 16, 2), block(16, 16, 1))
        self.stage2 = nn.Sequential(block(16, 24, 2), block(24, 24, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(self.stage1(self.stem(x)))


class WideHead(nn.Module):
    def __init__(self, in_chans: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.encoder = Encoder(in_chans)
        self.conv_head = nn.Conv2d(24, 1024, 1)  # 25,600 parameters; the encoder has 12,576
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.conv_head(self.encoder(x)))).flatten(1))


class BigClassifier(nn.Module):
    def __init__(self, in_chans: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.encoder = Encoder(in_chans)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(24, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.encoder(x)).flatten(1))
