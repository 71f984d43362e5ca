"""A small Swin-like token model whose stages return (normed tokens, size, next tokens, size):
each stage's own output (normed, at the stage's resolution) and the next stage's input (the
tokens merged 2x2 inside the stage). The stage's output is the feature; the merged tokens are
what the next stage reads."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class Merge(nn.Module):
    """2x2 neighbouring tokens concatenated, then a linear to twice the width."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduce = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        h, w = size
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5)
        return self.reduce(self.norm(x.reshape(b, (h // 2) * (w // 2), 4 * c)))


class Stage(nn.Module):
    def __init__(self, dim: int, depth: int, merge: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.merge = Merge(dim) if merge else None

    def forward(self, x: torch.Tensor, size: tuple[int, int]):
        for block in self.blocks:
            x = block(x, size)
        out = self.norm(x)
        if self.merge is None:
            return out, size, x, size
        return out, size, self.merge(x, size), (size[0] // 2, size[1] // 2)


class SwinStageTuples(nn.Module):
    def __init__(self, in_chans: int = 3, dim: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, 4, 4)
        self.stages = nn.ModuleList(Stage(dim * 2**i, depth=2, merge=i < 3) for i in range(4))
        self.head = nn.Linear(dim * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        size = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        for stage in self.stages:
            out, _, x, size = stage(x, size)
        return self.head(out.mean(dim=1))
