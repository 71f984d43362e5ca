"""An encoder in the style of TerraMind's with merge_method="dict": its forward returns a list
with one dict per block, the block's tokens under the name of the modality they came from."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class DictPerBlockEncoder(nn.Module):
    def __init__(self, in_chans: int = 4, dim: int = 24, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_chans, dim, 8, 8)
        self.blocks = nn.ModuleList([Block(dim) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        x = self.embed(x).flatten(2).transpose(1, 2)
        out = []
        for block in self.blocks:
            x = block(x)
            out.append({"S2L2A": x})
        return out
