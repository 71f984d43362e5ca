"""Peak memory of ``scaffold inspect`` on a ~630M-parameter ViT (about 2.4 GiB of fp32 weights).

The model (embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4, patch 14, img_size=224, a class
token, in_chans=3) is written to a temporary folder; each run starts a fresh helper process that
runs ``scaffold inspect vit600m.py:ViT600M --json`` and reads the child's peak resident set size
from ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``. Building the model on the meta device keeps
the weights out of memory. For reference, the peak RSS of ``python -c "import torch"`` is measured
side by side (interleaved). Target: median peak RSS < 1.5 GiB.

    python benchmarks/inspect_memory.py [--runs 3] [--json]
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from _common import PYTHON, SCAFFOLD, parse_args, report, run_checked

TARGET_MIB = 1.5 * 1024
VIT_CLASS = "ViT600M"
VIT_SOURCE = '''"""A ViT-H-sized vision transformer (~630M parameters) with a class token, for the benchmarks."""

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT600M(nn.Module):
    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 14,
        in_chans: int = 3,
        embed_dim: int = 1280,
        depth: int = 32,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        grid = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid + 1, embed_dim))
        self.blocks = nn.Sequential(
            *[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])
'''

# Runs argv[1:] and prints the peak RSS (KiB on Linux) of the largest process it waited for.
PEAK_RSS_HELPER = """\
import resource, subprocess, sys

proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
if proc.returncode != 0:
    sys.stderr.write(proc.stderr[-4000:])
    sys.exit(proc.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def param_count(folder: Path) -> int:
    """Parameters of the ViT, counted in a subprocess that builds it on the meta device."""
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, sys.argv[1])\nfrom vit600m import {VIT_CLASS}\n"
        f"with torch.device('meta'):\n    m = {VIT_CLASS}()\n"
        "print(sum(p.numel() for p in m.parameters()))\n"
    )
    return int(run_checked([PYTHON, "-c", code, str(folder)]).stdout.strip())


def peak_rss_mib(cmd: list[str]) -> float:
    """Peak RSS of one run of `cmd`, in MiB, measured from a fresh helper process."""
    out = run_checked([PYTHON, "-c", PEAK_RSS_HELPER, *cmd]).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def measure(runs: int) -> dict[str, Any]:
    """Median peak RSS of `scaffold inspect` on the ViT over `runs` runs, and the reference."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        folder = Path(tmp)
        (folder / "vit600m.py").write_text(VIT_SOURCE)
        params = param_count(folder)
        cmd = [SCAFFOLD, "inspect", f"{folder / 'vit600m.py'}:{VIT_CLASS}", "--json"]
        reference_cmd = [PYTHON, "-c", "import torch"]
        references: list[float] = []
        peaks: list[float] = []
        for _ in range(runs):
            references.append(peak_rss_mib(reference_cmd))
            peaks.append(peak_rss_mib(cmd))
    median = statistics.median(peaks)
    return {
        "name": "inspect memory (scaffold inspect on a ~630M-parameter ViT)",
        "runs": runs,
        "params": params,
        "fp32_weights_mib": round(params * 4 / 2**20, 1),
        "peak_rss_mib": [round(p, 1) for p in peaks],
        "median_peak_rss_mib": round(median, 1),
        "import_torch_median_peak_rss_mib": round(statistics.median(references), 1),
        "target_mib": TARGET_MIB,
        "ok": median < TARGET_MIB,
    }


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=3)
    result = measure(args.runs)
    if args.json:
        report(result, as_json=True)
        return 0
    print(
        f"{result['name']}: median peak RSS {result['median_peak_rss_mib']:.0f} MiB over "
        f"{result['runs']} runs (fp32 weights alone: {result['fp32_weights_mib']:.0f} MiB, "
        f"{result['params'] / 1e6:.0f}M params; `import torch` alone: "
        f"{result['import_torch_median_peak_rss_mib']:.0f} MiB); target < {TARGET_MIB:.0f} MiB -> "
        f"{'OK' if result['ok'] else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
