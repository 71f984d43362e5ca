"""An encoder whose forward takes one dict, ``datacube``: the image under "pixels", a (B, 4)
time encoding under "time", a (B, 4) location under "latlon", the ground sample distance under
"gsd" and the (C,) wavelengths of the bands under "waves" (each band's patch embedding is made
from its wavelength, so it takes any number of bands)."""

import torch
from torch import nn


class WaveEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.dim = dim
        self.weights = nn.Linear(1, patch_size * patch_size * dim)

    def forward(self, x: torch.Tensor, waves: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        kernel = self.weights(waves[:, None]).reshape(-1, self.dim, p, p)  # C, D, p, p
        out = nn.functional.conv2d(x, kernel.transpose(0, 1), stride=p)  # B, D, h, w
        return out.flatten(2).transpose(1, 2)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class DatacubeEncoder(nn.Module):
    def __init__(self, patch_size: int = 4, dim: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.embed = WaveEmbed(patch_size, dim)
        self.time = nn.Linear(4, dim)
        self.latlon = nn.Linear(4, dim)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])

    def forward(self, datacube: dict) -> torch.Tensor:
        tokens = self.embed(datacube["pixels"], datacube["waves"])
        meta = self.time(datacube["time"])[:, None, :] + self.latlon(datacube["latlon"])[:, None, :]
        return self.blocks(tokens + meta * datacube["gsd"] / 10.0)
