"""A CROMA-style two-input encoder: the optical image and the SAR image are parameters of their
own (`x_sar` defaults to None), each with its own patch embedding, summed before the stages."""

import torch
from torch import nn


class TwoInputs(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.optical = nn.Conv2d(4, dim, 4, 4)
        self.sar = nn.Conv2d(2, dim, 4, 4)
        self.stage1 = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, 2, 1), nn.ReLU())

    def forward(self, x_optical: torch.Tensor, x_sar: torch.Tensor | None = None) -> torch.Tensor:
        h = self.optical(x_optical)
        if x_sar is not None:
            h = h + self.sar(x_sar)
        return self.stage2(self.stage1(h))


class OpticalDictAndSar(TwoInputs):
    """The optical image in a dict (`x["optical"]`), the SAR image a parameter of its own."""

    def forward(self, x: dict[str, torch.Tensor], sar: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x["optical"], sar)


class Passthrough(nn.Module):
    """`forward(*args, **kwargs)` around TwoInputs: no parameter names the inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TwoInputs()

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return self.inner(*args, **kwargs)
