"""A CROMA-style two-modality encoder: `forward(x_sar=None, x_optical=None)`, each modality with
its own patch embedding and blocks; a modality that is not given is skipped."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class Branch(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch_size: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.embed(x).flatten(2).transpose(1, 2))


class TwoModalEncoder(nn.Module):
    def __init__(self, sar_chans: int = 2, optical_chans: int = 12, dim: int = 24) -> None:
        super().__init__()
        self.sar = Branch(sar_chans, dim, 8, 2)
        self.optical = Branch(optical_chans, dim, 8, 4)

    def forward(
        self, x_sar: torch.Tensor | None = None, x_optical: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        out = {}
        if x_sar is not None:
            out["sar_encodings"] = self.sar(x_sar).mean(dim=1)
        if x_optical is not None:
            out["optical_encodings"] = self.optical(x_optical).mean(dim=1)
        return out
