"""CNNs that declare their own features, timm-style: `DeclaredInside` lists the first block of
stage1 (16 channels at 4) where the tensor that flows on is stage1's output (24 at 4), and an
`out_indices` of four levels where it has three; `DeclaredAgrees` lists what flows on;
`IntermediatesInside` declares the same inner block through `forward_intermediates`."""

import torch
from torch import nn


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class DeclaredInside(nn.Module):
    def __init__(self, in_chans: int = 3, out_indices: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        super().__init__()
        self.out_indices = out_indices
        self.stem = block(in_chans, 8, 2)
        self.stage1 = nn.Sequential(block(8, 16, 2), block(16, 24, 1))
        self.stage2 = nn.Sequential(block(24, 32, 2), block(32, 32, 1))
        self.feature_info = [
            dict(module="stem", num_chs=8, reduction=2),
            dict(module="stage1.0", num_chs=16, reduction=4),
            dict(module="stage2", num_chs=32, reduction=8),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(self.stage1(self.stem(x)))


class DeclaredAgrees(DeclaredInside):
    def __init__(self, in_chans: int = 3) -> None:
        super().__init__(in_chans, out_indices=(0, 1, 2))
        self.feature_info[1] = dict(module="stage1", num_chs=24, reduction=4)


class IntermediatesInside(nn.Module):
    """No feature_info; its `forward_intermediates` returns stage1's first block (16 at 4)."""

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.stem = block(in_chans, 8, 2)
        self.stage1 = nn.Sequential(block(8, 16, 2), block(16, 24, 1))
        self.stage2 = nn.Sequential(block(24, 32, 2), block(32, 32, 1))

    def forward_intermediates(self, x: torch.Tensor, intermediates_only: bool = False):
        stem = self.stem(x)
        inner = self.stage1[0](stem)
        last = self.stage2(self.stage1[1](inner))
        return [stem, inner, last] if intermediates_only else (last, [stem, inner, last])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(self.stage1(self.stem(x)))
