"""A ViT that embeds each group of bands apart (one Conv2d per group) and concatenates the
groups' tokens, group after group, each with a learned group embedding; with or without a
class token first. Four groups of 4x4 tokens at 64 pixels are 64 tokens: an 8x8 grid by the
count alone."""

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


GROUPS = ((0, 1), (2, 3), (4,), (5,))


class GroupViT(nn.Module):
    def __init__(
        self,
        img_size: int = 64,
        patch_size: int = 16,
        in_chans: int = 6,
        embed_dim: int = 32,
        depth: int = 4,
        num_heads: int = 2,
        class_token: bool = True,
        groups: tuple[tuple[int, ...], ...] = GROUPS,
    ) -> None:
        super().__init__()
        if sorted(b for g in groups for b in g) != list(range(in_chans)):
            raise ValueError(f"the groups {groups} do not cover the {in_chans} bands once each")
        self.groups = [list(g) for g in groups]
        self.patch_embed = nn.ModuleList(
            nn.Conv2d(len(g), embed_dim, patch_size, patch_size) for g in self.groups
        )
        side = img_size // patch_size
        self.pos_embed = nn.Parameter(torch.randn(1, embed_dim, side, side) * 0.02)
        self.group_embed = nn.Parameter(torch.randn(len(groups), embed_dim) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02) if class_token else None
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = []
        for i, (bands, embed) in enumerate(zip(self.groups, self.patch_embed, strict=True)):
            t = embed(x[:, bands])
            h, w = t.shape[-2:]
            t = t.flatten(2).transpose(1, 2) + grid_positions(self.pos_embed, h, w)
            tokens.append(t + self.group_embed[i])
        x = torch.cat(tokens, dim=1)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


def group_vit_no_class(**kwargs) -> GroupViT:
    return GroupViT(class_token=False, **kwargs)
