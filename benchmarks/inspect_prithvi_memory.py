"""Peak memory of ``scaffold inspect`` on TerraTorch's full PrithviViT (~300M parameters).

``terratorch.models.backbones.prithvi_mae:PrithviViT`` with its defaults (embed_dim=1024, depth=24,
num_heads=16, img_size=224; about 1.2 GiB of fp32 weights) is a masked-autoencoder encoder: its
forward masks 75% of the tokens at random, so scaffold switches masking off, finds the random
draws and traces it again with fixed noise, on the meta device. Each run starts a fresh helper
process that runs ``scaffold inspect ... --json`` and reads the child's peak resident set size.
For reference, the peak RSS of importing the model's module (torch, timm and terratorch) is
measured side by side (interleaved). Target: median peak RSS < 1.5 GiB.

    python benchmarks/inspect_prithvi_memory.py [--runs 3] [--json]
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from _common import PYTHON, SCAFFOLD, parse_args, report, run_checked
from inspect_memory import peak_rss_mib

TARGET_MIB = 1.5 * 1024
TARGET = "terratorch.models.backbones.prithvi_mae:PrithviViT"


def measure(runs: int) -> dict[str, Any]:
    """Median peak RSS of `scaffold inspect` on PrithviViT over `runs` runs, and the reference."""
    cmd = [SCAFFOLD, "inspect", TARGET, "--json"]
    module = TARGET.split(":")[0]
    reference_cmd = [PYTHON, "-c", f"import {module}"]
    spec = json.loads(run_checked(cmd).stdout)  # what the measured runs compute
    references: list[float] = []
    peaks: list[float] = []
    for _ in range(runs):
        references.append(peak_rss_mib(reference_cmd))
        peaks.append(peak_rss_mib(cmd))
    median = statistics.median(peaks)
    return {
        "name": "inspect memory (scaffold inspect on PrithviViT, ~300M parameters)",
        "runs": runs,
        "params": spec["num_params"],
        "fp32_weights_mib": round(spec["num_params"] * 4 / 2**20, 1),
        "traced_on": spec["traced_on"],
        "features": len(spec["features"]),
        "forward_call": spec["forward_call"],
        "peak_rss_mib": [round(p, 1) for p in peaks],
        "median_peak_rss_mib": round(median, 1),
        "import_module_median_peak_rss_mib": round(statistics.median(references), 1),
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
        f"{result['params'] / 1e6:.0f}M params, traced on {result['traced_on']}, "
        f"{result['features']} features; `import {TARGET.split(':')[0]}` alone: "
        f"{result['import_module_median_peak_rss_mib']:.0f} MiB); target < {TARGET_MIB:.0f} MiB "
        f"-> {'OK' if result['ok'] else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
