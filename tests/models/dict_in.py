"""A Panopticon-style encoder: `forward(x_dict)` with the image under "imgs" and a (B, C) tensor
of per-band ids under "chn_ids" that select each band's embedding."""

import torch
from torch import nn


class ChannelFusion(nn.Module):
    def __init__(self, patch_size: int, dim: int, num_ids: int = 16) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, patch_size, patch_size)
        self.band_embed = nn.Embedding(num_ids, dim)

    def forward(self, x: torch.Tensor, chn_ids: torch.Tensor) -> torch.Tensor:
        batch, chans, h, w = x.shape
        tokens = self.proj(x.reshape(batch * chans, 1, h, w))  # (B*C, D, h', w')
        tokens = tokens.reshape(batch, chans, *tokens.shape[1:])
        tokens = tokens + self.band_embed(chn_ids)[:, :, :, None, None]  # chn_ids: (B, C)
        return tokens.mean(dim=1).flatten(2).transpose(1, 2)  # (B, N, D)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class BandDictEncoder(nn.Module):
    def __init__(self, patch_size: int = 4, embed_dim: int = 20, depth: int = 2) -> None:
        super().__init__()
        self.fusion = ChannelFusion(patch_size, embed_dim)
        self.blocks = nn.Sequential(*[Block(embed_dim) for _ in range(depth)])

    def forward(self, x_dict: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.fusion(x_dict["imgs"], x_dict["chn_ids"])
        return self.blocks(x)
