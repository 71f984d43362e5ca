"""A TerraMind-style encoder: `modalities` (a constructor list) chooses one patch embedding per
modality, and the forward takes a dict {modality: image} and uses the modalities it is given.
`FirstModalityOnly` takes one image, the first modality's."""

import torch
from torch import nn

CHANNELS = {"S2L2A": 4, "S1GRD": 2}


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class ModalityDictEncoder(nn.Module):
    def __init__(
        self,
        modalities: list[str] = ["S2L2A", "S1GRD"],  # noqa: B006
        dim: int = 16,
        depth: int = 2,
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.embed = nn.ModuleDict({m: nn.Conv2d(CHANNELS[m], dim, 4, 4) for m in modalities})
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = [self.embed[m](x[m]).flatten(2).transpose(1, 2) for m in self.modalities if m in x]
        return self.blocks(torch.stack(tokens).mean(dim=0))


class FirstModalityOnly(ModalityDictEncoder):
    """The same modules; the forward takes one image and embeds it as the first modality."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tokens = self.embed[self.modalities[0]](x).flatten(2).transpose(1, 2)
        return self.blocks(tokens)
