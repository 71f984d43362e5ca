"""A DOFA-style ViT: the patch embedding's weights are generated from the bands' wavelengths,
so `forward(x, wavelengths)` takes a (C,) tensor: one wavelength (micrometres) per band."""

import torch
from torch import nn
from torch.nn import functional as F


class WavelengthPatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        # wavelength -> the (embed_dim, patch, patch) kernel of that band
        self.weight_gen = nn.Linear(8, embed_dim * patch_size * patch_size)
        self.bias = nn.Parameter(torch.zeros(embed_dim))

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        freqs = torch.arange(1, 5, device=x.device, dtype=x.dtype)
        angles = wavelengths[:, None].to(x.dtype) * freqs  # (C, 4)
        code = torch.cat([angles.sin(), angles.cos()], dim=1)  # (C, 8)
        p = self.patch_size
        weight = self.weight_gen(code).view(-1, self.embed_dim, p, p).transpose(0, 1)
        return F.conv2d(x, weight, self.bias, stride=p)  # (B, D, H/p, W/p)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class SpectralViT(nn.Module):
    def __init__(self, patch_size: int = 8, embed_dim: int = 24, depth: int = 3) -> None:
        super().__init__()
        self.patch_embed = WavelengthPatchEmbed(patch_size, embed_dim)
        self.blocks = nn.Sequential(*[Block(embed_dim) for _ in range(depth)])
        self.head = nn.Linear(embed_dim, 5)

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x, wavelengths).flatten(2).transpose(1, 2)  # (B, N, D)
        return self.head(self.blocks(tokens).mean(dim=1))
