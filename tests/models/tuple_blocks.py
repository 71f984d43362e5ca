"""A small token model whose blocks return (aux, tokens), as TNT's do.

An aux map (NCHW) runs alongside the tokens: each block reads both and returns both, and the
last block's aux map is dropped. The tokens (item 1 of each block's output) are the stream that
goes on to the norm and the head.
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, aux_chs: int) -> None:
        super().__init__()
        self.aux = nn.Conv2d(aux_chs, aux_chs, 3, 1, 1)
        self.mix = nn.Linear(aux_chs, dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Linear(dim, dim)

    def forward(self, aux: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aux = aux + torch.relu(self.aux(aux))
        x = x + self.mix(aux.flatten(2).transpose(1, 2))
        x = x + self.mlp(self.norm(x))
        return aux, x


class TupleBlocks(nn.Module):
    def __init__(
        self, in_chans: int = 3, dim: int = 32, aux_chs: int = 8, depth: int = 4, patch: int = 4
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, patch, patch)
        self.aux_embed = nn.Conv2d(in_chans, aux_chs, patch, patch)
        self.blocks = nn.ModuleList(Block(dim, aux_chs) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def token_stream(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tokens after each block: the stream the backbone's features must be."""
        aux = self.aux_embed(x)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        stream = []
        for block in self.blocks:
            aux, tokens = block(aux, tokens)
            stream.append(tokens)
        return stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.token_stream(x)[-1]).mean(dim=1))
