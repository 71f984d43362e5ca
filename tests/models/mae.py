"""An MAE encoder in the style of Prithvi's: `forward(x, mask_ratio=0.75)` shuffles the tokens by
argsort of random noise and keeps the first (1 - mask_ratio); with mask_ratio=0 it still
shuffles. Returns (latent, mask, ids_restore)."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(x)


class MaskedEncoder(nn.Module):
    def __init__(
        self, img_size: int = 32, patch_size: int = 8, in_chans: int = 3, embed_dim: int = 16
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        grid = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, grid, embed_dim) * 0.02)
        self.blocks = nn.ModuleList([Block(embed_dim) for _ in range(3)])
        self.norm = nn.LayerNorm(embed_dim)

    def random_masking(self, x: torch.Tensor, mask_ratio: float):
        batch, length, dim = x.shape
        keep = int(length * (1 - mask_ratio))
        noise = torch.rand(batch, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, dim))
        mask = torch.ones(batch, length, device=x.device)
        mask[:, :keep] = 0
        return kept, torch.gather(mask, 1, ids_restore), ids_restore

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.75):
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        x, mask, ids_restore = self.random_masking(x, mask_ratio)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore
