"""A spectral foundation model in the style of CopernicusFM's: the patch embedding's kernels are
generated from each band's wavelength and bandwidth (nm, one value per band), and a (4,) metadata
vector (longitude, latitude, time, area) is embedded beside them, where NaN means unknown: an
unknown value gets a learned embedding of its own. No convolution module holds the bands."""

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class SpectralMetaViT(nn.Module):
    def __init__(self, patch_size: int = 8, dim: int = 24, depth: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.dim = dim
        self.kernel_gen = nn.Linear(2, dim * patch_size * patch_size)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.meta_embed = nn.Linear(4, dim)
        self.unknown_embed = nn.Linear(4, dim, bias=False)
        self.blocks = nn.ModuleList([Block(dim) for _ in range(depth)])

    def embed(self, x, metadata, wavelengths, bandwidths) -> torch.Tensor:
        waves = torch.as_tensor(wavelengths, dtype=x.dtype, device=x.device)
        widths = torch.as_tensor(bandwidths, dtype=x.dtype, device=x.device)
        code = torch.stack([waves / 1000.0, widths / 100.0], dim=1)  # (C, 2)
        p = self.patch_size
        kernel = self.kernel_gen(code).view(-1, self.dim, p, p).transpose(0, 1)
        tokens = F.conv2d(x, kernel, self.bias, stride=p).flatten(2).transpose(1, 2)
        known = ~torch.isnan(metadata)
        meta = self.meta_embed(torch.nan_to_num(metadata, nan=0.0))
        return tokens + (meta + self.unknown_embed((~known).to(x.dtype))).unsqueeze(-2)

    def forward(
        self,
        x: torch.Tensor,
        metadata: torch.Tensor,
        wavelengths: list[float],
        bandwidths: list[float],
    ) -> torch.Tensor:
        x = self.embed(x, metadata, wavelengths, bandwidths)
        for block in self.blocks:
            x = block(x)
        return x
