"""A backbone that returns a list of feature maps, coarse to fine (reversed pyramid)."""

import torch
from torch import nn


class ListBackbone(nn.Module):
    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.a = nn.Conv2d(in_chans, 8, 3, 2, 1)
        self.b = nn.Conv2d(8, 16, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = torch.relu(self.a(x))
        b = torch.relu(self.b(a))
        return [b, a]
