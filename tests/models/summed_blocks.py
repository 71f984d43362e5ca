"""A ViT in the style of CROMA's: each block is a ModuleList([Attention, FFN]) that is never called
itself; the forward loops over the blocks, calls the two sub-layers one by one and adds their
outputs back with a Python `+`. Each sub-layer returns only the residual's delta; the stream is
the sum, made by no module. The patches go in through a Linear on rearranged pixels."""

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.input_norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.to_qkv(self.input_norm(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attn = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5 + bias).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, d))


class FFN(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_norm(x))


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.ModuleList([Attention(dim, heads), FFN(dim)]) for _ in range(depth)]
        )
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for attn, ffn in self.layers:
            x = attn(x, bias) + x
            x = ffn(x) + x
        return self.norm_out(x)


class SummedBlocksViT(nn.Module):
    def __init__(
        self, in_chans: int = 4, patch_size: int = 8, dim: int = 32, depth: int = 4
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.linear_input = nn.Linear(in_chans * patch_size * patch_size, dim)
        self.transformer = Transformer(dim, depth, heads=2)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        p = self.patch_size
        x = x.reshape(b, c, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        return self.linear_input(x.reshape(b, (height // p) * (width // p), c * p * p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x)
        bias = torch.zeros(1, 1, tokens.shape[1], tokens.shape[1], device=x.device)
        return self.transformer(tokens, bias)
