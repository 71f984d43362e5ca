"""A patch-14 ViT with a class token at 56 pixels: a 4x4 grid, which is also the ceil grid of
56 / 16. `strict`: the forward refuses any other input size, as a ViT with a fixed position
table does."""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def grid_positions(pos: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(1, C, H0, W0) learned positions resized to an h x w grid, as (1, h*w, C)."""
    if pos.shape[-2:] != (h, w):
        pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
    return pos.flatten(2).transpose(1, 2)


class Patch14ViT(nn.Module):
    def __init__(
        self,
        img_size: int = 56,
        in_chans: int = 3,
        embed_dim: int = 32,
        depth: int = 4,
        num_heads: int = 2,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.img_size, self.strict = img_size, strict
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, 14, 14)
        side = img_size // 14
        self.pos_embed = nn.Parameter(torch.randn(1, embed_dim, side, side) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.strict and tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not {self.img_size}")
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2) + grid_positions(self.pos_embed, h, w)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.head(self.norm(self.blocks(x))[:, 0])


def strict_patch14_vit() -> Patch14ViT:
    return Patch14ViT(strict=True)
