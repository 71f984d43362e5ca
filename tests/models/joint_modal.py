"""A two-modality encoder in the style of CROMA's: `modalities` (a list) chooses the encoders
it builds, and with both it fuses them, so a forward given one image only fails inside on a
local that was never assigned. `Unfinished` defines no forward at all, only forward_features."""

import torch
from torch import nn


class JointModalEncoder(nn.Module):
    def __init__(self, modalities: list[str] = ["sar", "optical"], dim: int = 16) -> None:  # noqa: B006
        super().__init__()
        self.modalities = modalities
        if "sar" in modalities:
            self.sar = nn.Conv2d(2, dim, 8, 8)
        if "optical" in modalities:
            self.optical = nn.Conv2d(12, dim, 8, 8)
        if len(modalities) == 2:
            self.joint = nn.Linear(2 * dim, dim)

    def forward(self, x_sar: torch.Tensor | None = None, x_optical: torch.Tensor | None = None):
        if "sar" in self.modalities and x_sar is not None:
            sar = self.sar(x_sar).flatten(2).transpose(1, 2)
        if "optical" in self.modalities and x_optical is not None:
            optical = self.optical(x_optical).flatten(2).transpose(1, 2)
        if len(self.modalities) == 2:
            return self.joint(torch.cat([sar, optical], dim=-1))
        return sar if "sar" in self.modalities else optical


class Unfinished(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, 4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
