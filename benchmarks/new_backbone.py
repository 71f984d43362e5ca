"""Speed of ``scaffold new-backbone`` against a bare run of the benchmark YAML it generates.

The candidate is ``scaffold new-backbone bench_cnn.py:BenchCNN --out <fresh dir> --json`` on a
small four-stage CNN: analysis, generation and verification, which ends by running the generated
benchmark YAML in-process. The baseline is ``terratorch iterate --hpo --config benchmark.yaml``
on the YAML of a first, untimed generation, so the ratio is the overhead scaffold adds on top of
the benchmark run itself. Both run without MLFLOW_ALLOW_FILE_STORE in their environment (the
generated package sets it). Target: median ratio <= 1.35.

    python benchmarks/new_backbone.py [--runs 3] [--json]
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import (
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

TARGET_RATIO = 1.35
ENV = clean_env(drop=["MLFLOW_ALLOW_FILE_STORE"])


def new_backbone_cmd(target: str, out: Path) -> list[str]:
    return [SCAFFOLD, "new-backbone", target, "--out", str(out), "--json"]


def generate(target: str, out: Path) -> Path:
    """Generate once, untimed, and return the path of the benchmark YAML.

    Runs in `out`'s parent: terratorch-iterate writes an experiment_logs/ folder into the cwd.
    """
    proc = run_checked(new_backbone_cmd(target, out), cwd=out.parent, env=ENV)
    result = json.loads(proc.stdout)
    if not result.get("verified"):
        raise RuntimeError(f"scaffold new-backbone did not verify: {proc.stdout[-2000:]}")
    return Path(result["benchmark_config"])


def candidate_for(target: str, folder: Path) -> Callable[[int], list[str]]:
    """Each candidate run writes into a fresh folder: run0 (the warm-up), run1, run2, ..."""
    return lambda index: new_backbone_cmd(target, folder / f"run{index}")


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=3)
    with tempfile.TemporaryDirectory(prefix="bench-new-backbone-") as tmp:
        folder = Path(tmp)
        target = f"{write_cnn(folder)}:{CNN_CLASS}"
        config = generate(target, folder / "first")
        baseline = [TERRATORCH, "iterate", "--hpo", "--config", str(config)]
        base, cand = interleaved(
            baseline, candidate_for(target, folder), args.runs, cwd=folder, env=ENV
        )
    name = "new-backbone (scaffold new-backbone vs terratorch iterate on its YAML)"
    report(summary(name, base, cand, TARGET_RATIO), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
