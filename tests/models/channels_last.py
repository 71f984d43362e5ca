"""A pyramid that works channels-last, like ConvNeXt or torchvision's Swin: stage outputs are NHWC."""

import torch
from torch import nn


class Stage(nn.Module):
    def __init__(self, dim_in: int, dim: int, downsample: bool) -> None:
        super().__init__()
        self.down = nn.Conv2d(dim_in, dim, 2, 2) if downsample else nn.Conv2d(dim_in, dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # NHWC in, NHWC out
        return x + self.mlp(self.norm(x))


class ChannelsLastNet(nn.Module):
    def __init__(self, in_chans: int = 5, dims: tuple[int, ...] = (12, 24, 48)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, dims[0], 4, 4)
        self.stages = nn.ModuleList(
            Stage(dims[max(i - 1, 0)], d, downsample=i > 0) for i, d in enumerate(dims)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)
        for stage in self.stages:
            x = stage(x)
        return x
