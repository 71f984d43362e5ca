"""A ViT-style encoder whose attention reads its `qkv` layer's weight with F.linear (with a bias of
its own) rather than calling the layer, as timm's EVA does, and whose forward takes an optional
`attn_mask`: the layer never "runs", yet its weights are read, so no input is left unfed."""

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.qkv_bias = nn.Parameter(torch.zeros(3 * dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = F.linear(x, self.qkv.weight, self.qkv_bias).chunk(3, dim=-1)
        return self.proj(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask))


class FusedQkvViT(nn.Module):
    def __init__(self, in_chans: int = 3, dim: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, 8, 8)
        self.blocks = nn.ModuleList([Attention(dim) for _ in range(depth)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = x + block(x, attn_mask)
        return x
