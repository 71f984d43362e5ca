"""What one seed of a task costs: ``bash fit/seeds.sh 0`` (``terratorch fit`` then ``terratorch
test`` on its last checkpoint) against a bare ``terratorch fit --config fit/smoke.yaml``.

On the small CNN's smoke task (1 epoch, 2 training batches), so the numbers are mostly two
start-ups of TerraTorch: what a seed costs on top of the training itself. Multiply the training
part by the real task's epochs and data for a real benchmark. Target: median ratio <= 2.5 (the
test is a second process).

    python benchmarks/seed_cost.py [--runs 3] [--json]
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _common import (
    BIN,
    CNN_CLASS,
    SCAFFOLD,
    TERRATORCH,
    clean_env,
    interleaved,
    parse_args,
    report,
    run_checked,
    summary,
    write_cnn,
)

TARGET_RATIO = 2.5


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=3)
    env = clean_env() | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix="bench-seed-cost-") as tmp:
        folder = Path(tmp)
        target = f"{write_cnn(folder)}:{CNN_CLASS}"
        out = folder / "bench"
        run_checked([SCAFFOLD, "new-backbone", target, "--out", str(out), "--no-verify"], env=env)
        baseline = [TERRATORCH, "fit", "--config", str(out / "fit" / "smoke.yaml")]
        candidate = ["bash", str(out / "fit" / "seeds.sh"), "0"]
        base, cand = interleaved(baseline, candidate, args.runs, cwd=out, env=env)
    name = "one seed (fit/seeds.sh: fit then test, vs terratorch fit alone)"
    report(summary(name, base, cand, TARGET_RATIO), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
