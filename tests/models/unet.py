"""A small UNet: an encoder of three levels, then a decoder back to the input's resolution that
takes the encoder's maps as skips and returns per-pixel logits."""

import torch
from torch import nn


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1), nn.ReLU()
    )


class Encoder(nn.Module):
    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__()
        self.stem = double_conv(in_chans, width)  # r1
        self.down1 = nn.Sequential(nn.MaxPool2d(2), double_conv(width, 2 * width))  # r2
        self.down2 = nn.Sequential(nn.MaxPool2d(2), double_conv(2 * width, 4 * width))  # r4
        self.down3 = nn.Sequential(nn.MaxPool2d(2), double_conv(4 * width, 8 * width))  # r8

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = [self.stem(x)]
        for down in (self.down1, self.down2, self.down3):
            skips.append(down(skips[-1]))
        return skips


class Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, 2)
        self.conv = double_conv(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class Decoder(nn.Module):
    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.up3 = Up(8 * width, 4 * width)
        self.up2 = Up(4 * width, 2 * width)
        self.up1 = Up(2 * width, width)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.up3(skips[3], skips[2])
        x = self.up2(x, skips[1])
        return self.head(self.up1(x, skips[0]))


class UNet(nn.Module):
    def __init__(self, in_chans: int = 3, width: int = 8, num_classes: int = 2) -> None:
        super().__init__()
        self.encoder = Encoder(in_chans, width)
        self.decoder = Decoder(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
