"""An encoder in the style of Clay's: `bands` is a list of band names, not a count. Each band's
patches go through one shared linear patch embedding plus a learned embedding of that band, and
the bands are averaged into one token per patch; then a ViT's blocks."""

import torch
from torch import nn

WAVELENGTHS = {"blue": 0.49, "green": 0.56, "red": 0.665, "nir": 0.842, "swir16": 1.61}


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class BandEncoder(nn.Module):
    def __init__(
        self,
        bands: list[str] = ["blue", "green", "red", "nir"],  # noqa: B006 (a band list, as Clay writes it)
        patch_size: int = 8,
        dim: int = 32,
        depth: int = 3,
    ) -> None:
        super().__init__()
        self.bands = list(bands)
        self.patch_size = patch_size
        self.patch = nn.Linear(patch_size * patch_size, dim)
        waves = torch.tensor([WAVELENGTHS[b] for b in self.bands])
        self.register_buffer("waves", waves)
        self.band_embed = nn.Linear(1, dim)
        self.blocks = nn.ModuleList([Block(dim) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        p = self.patch_size
        x = x.reshape(b, c, height // p, p, width // p, p).permute(0, 1, 2, 4, 3, 5)
        x = self.patch(x.reshape(b, c, (height // p) * (width // p), p * p))  # B, C, N, D
        x = (x + self.band_embed(self.waves[:, None])[None, :, None]).mean(dim=1)
        for block in self.blocks:
            x = block(x)
        return x
