"""Speed of ``scaffold inspect`` on a small CNN against building it and running one forward.

The candidate is ``scaffold inspect bench_cnn.py:BenchCNN --json`` (a ~1.2M-parameter, four-stage
conv/bn/relu CNN with in_chans=3 that returns logits); the baseline is a plain script that imports
torch, builds the same model and runs one forward on an input of shape (1, 3, 64, 64), the shape
`scaffold inspect` picks for it. Target: median ratio <= 1.3.

    python benchmarks/inspect_speed.py [--runs 5] [--json]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from _common import (
    CNN_CLASS,
    PYTHON,
    SCAFFOLD,
    interleaved,
    parse_args,
    report,
    run_checked,
    summary,
    write_cnn,
)

TARGET_RATIO = 1.3
INPUT_SHAPE = (1, 3, 64, 64)

BASELINE_SOURCE = f"""\
import sys

import torch

sys.path.insert(0, sys.argv[1])
from bench_cnn import {CNN_CLASS}

model = {CNN_CLASS}().eval()
with torch.no_grad():
    out = model(torch.randn{INPUT_SHAPE})
print(tuple(out.shape))
"""


def check_shape(cnn: Path) -> None:
    """Fail early if `scaffold inspect` does not trace the CNN at the baseline's input shape."""
    proc = run_checked([SCAFFOLD, "inspect", f"{cnn}:{CNN_CLASS}", "--json"])
    shape = tuple(json.loads(proc.stdout)["input_shape"])
    if shape[-3:] != INPUT_SHAPE[1:]:
        raise RuntimeError(f"scaffold inspect traced {shape}, the baseline uses {INPUT_SHAPE}")


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=5)
    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as tmp:
        folder = Path(tmp)
        cnn = write_cnn(folder)
        script = folder / "baseline.py"
        script.write_text(BASELINE_SOURCE)
        check_shape(cnn)
        baseline = [PYTHON, str(script), str(folder)]
        candidate = [SCAFFOLD, "inspect", f"{cnn}:{CNN_CLASS}", "--json"]
        base, cand = interleaved(baseline, candidate, args.runs)
    name = "inspect speed (scaffold inspect vs build + one forward)"
    report(summary(name, base, cand, TARGET_RATIO), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
