"""A small ViT whose extra tokens sit where its constructor says: a class token before or after
the patch tokens, register tokens after them. Positions are learned on the base grid and
resized to the input's grid, so it runs at any size that is a multiple of the patch."""

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


class TokenOrderViT(nn.Module):
    def __init__(
        self,
        img_size: int = 64,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 32,
        depth: int = 4,
        num_heads: int = 2,
        class_token: str = "last",  # "first", "last" or "none"
        registers: int = 0,  # register tokens, after the patch tokens (and a last class token)
        premix: bool = False,  # a block on the patch tokens before the extra tokens join them
    ) -> None:
        super().__init__()
        self.class_token = class_token
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        side = img_size // patch_size
        self.pos_embed = nn.Parameter(torch.randn(1, embed_dim, side, side) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.reg_tokens = nn.Parameter(torch.randn(1, registers, embed_dim) * 0.02)
        self.premix = Block(embed_dim, num_heads) if premix else nn.Identity()
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = self.premix(x.flatten(2).transpose(1, 2) + grid_positions(self.pos_embed, h, w))
        b = x.shape[0]
        cls = self.cls_token.expand(b, -1, -1)
        parts = [x, self.reg_tokens.expand(b, -1, -1)]
        if self.class_token == "first":
            parts.insert(0, cls)
        elif self.class_token == "last":
            parts.append(cls)
        x = self.norm(self.blocks(torch.cat(parts, dim=1)))
        at = {"first": 0, "last": -1}.get(self.class_token)
        return self.head(x[:, at] if at is not None else x.mean(dim=1))


def suffix_class_vit() -> TokenOrderViT:
    """The class token after the 4x4 patch tokens."""
    return TokenOrderViT(class_token="last")


def register_vit() -> TokenOrderViT:
    """A class token first and four register tokens after the patch tokens."""
    return TokenOrderViT(class_token="first", registers=4)


def premixed_vit() -> TokenOrderViT:
    """A class token first, joined after a block has mixed the patch tokens."""
    return TokenOrderViT(class_token="first", premix=True)
