"""A ConvLSTM encoder for image time series, (B, C, T, H, W): a strided conv on each frame,
a ConvLSTM cell called once per frame in a Python loop, then a strided conv on the last
hidden state. Runs at any number of frames."""

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(cin + hidden, 4 * hidden, 3, 1, 1)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class ConvLSTMEncoder(nn.Module):
    def __init__(self, in_chans: int = 3, num_frames: int = 5, hidden: int = 8) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.stem = nn.Sequential(nn.Conv2d(in_chans, hidden, 3, 2, 1), nn.ReLU())
        self.cell = ConvLSTMCell(hidden, hidden)
        self.down = nn.Sequential(nn.Conv2d(hidden, 2 * hidden, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, height, width = x.shape
        h = x.new_zeros(b, self.cell.hidden, (height + 1) // 2, (width + 1) // 2)
        state = (h, h)
        for i in range(t):
            state = self.cell(self.stem(x[:, :, i]), state)
        return self.down(state[0])
