"""Small CNNs whose forward adds two modules' outputs itself at each level: a strided conv, then
``x = x + relu(refine(x))``. What flows on to the next level is the sum, which no module
returns: the feature is what enters the next level's conv (and the final norm), never one
operand. In PooledSum the last sum goes straight into a global pool: no module reads it."""

import torch
from torch import nn


class SummedStages(nn.Module):
    def __init__(self, in_chans: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        widths = (in_chans, 8, 16, 24, 32)
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1) for i in range(4))
        self.refine = nn.ModuleList(nn.Conv2d(w, w, 3, 1, 1) for w in widths[1:])
        self.norm = nn.BatchNorm2d(32)
        self.head = nn.Linear(32, num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        for down, refine in zip(self.down, self.refine, strict=True):
            x = down(x)
            x = x + torch.relu(refine(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encode(x)).mean(dim=(2, 3)))


class PooledSum(SummedStages):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x).mean(dim=(2, 3)))
