"""One strided conv makes the only feature map; a deep MLP on the flattened map does the rest.
The analysis can tap it once only: a single tap in a deep model is a doubt, not "verified"."""

import torch
from torch import nn


class OneMapDeepHead(nn.Module):
    def __init__(
        self, in_chans: int = 3, img_size: int = 32, width: int = 8, depth: int = 8
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, width, 4, 4)  # 32x32 -> 8x8, flattened for the MLP
        dims = [width * (img_size // 4) ** 2] + [64] * depth
        layers = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(self.stem(x).flatten(1)))
