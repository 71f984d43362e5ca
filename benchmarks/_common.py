"""Shared helpers for the benchmarks: timing subprocesses, interleaving runs, reporting.

Every benchmark compares a candidate command with a baseline command, run side by side
(baseline, candidate, baseline, candidate, ...) after one uncounted warm-up of each, and reports
the medians and the ratio median(candidate) / median(baseline) against a target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# A command, or a function of the run's index (0 for the warm-up, then 1..runs) that returns one.
Command = Sequence[str] | Callable[[int], Sequence[str]]

PYTHON = sys.executable
BIN = Path(sys.executable).parent
SCAFFOLD = str(BIN / "scaffold")
TERRATORCH = str(BIN / "terratorch")

# A small CNN returning logits (about 1.2M parameters): four stages of conv/bn/relu blocks.
CNN_CLASS = "BenchCNN"
CNN_SOURCE = '''"""A small four-stage CNN returning logits, for the benchmarks."""

import torch
from torch import nn


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class BenchCNN(nn.Module):
    def __init__(self, in_chans: int = 3, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        chans = [width, width * 2, width * 4, width * 8]
        stages = []
        cin = in_chans
        for cout in chans:
            stages.append(nn.Sequential(block(cin, cout, 2), block(cout, cout, 1)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(x)).flatten(1))
'''


def write_cnn(directory: Path) -> Path:
    """Write the benchmark CNN to `directory`/bench_cnn.py and return the file's path."""
    path = directory / "bench_cnn.py"
    path.write_text(CNN_SOURCE)
    return path


def parse_args(description: str, default_runs: int) -> argparse.Namespace:
    """The options every benchmark takes: ``--runs N`` and ``--json``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--runs", type=int, default=default_runs, help=f"counted runs (default {default_runs})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def clean_env(drop: Sequence[str] = ()) -> dict[str, str]:
    """A copy of this process's environment without the variables in `drop`."""
    env = dict(os.environ)
    for name in drop:
        env.pop(name, None)
    return env


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# The suite's UNet (encoder r1..r8, a decoder back to r1 on the skips), wider than in the tests.
UNET = Path(__file__).resolve().parents[1] / "tests" / "models" / "unet.py"
UNET_WIDTH = 16


def import_unet_backbone(out: Path, name: str, input_shape: Sequence[int]) -> None:
    """Generate the UNet's backbone (``new-backbone --no-verify``) as package `name` in `out`,
    analysed on `input_shape` (batch first), and import it: timm then builds `name`."""
    import importlib

    run_checked(
        [
            SCAFFOLD, "new-backbone", f"{UNET}:UNet", "--arg", f"width={UNET_WIDTH}",
            "--name", name, "--out", str(out),
            "--input-shape", ",".join(map(str, input_shape[1:])), "--no-verify",
        ]
    )  # fmt: skip
    sys.path.insert(0, str(out))
    importlib.import_module(name)


def run_checked(
    cmd: Sequence[str], cwd: Path | str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `cmd`, capturing its output; raise with the tail of its stderr if it fails."""
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=None if env is None else dict(env), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed with exit status {proc.returncode}: {' '.join(cmd)}\n"
            f"{_tail(proc.stderr) or _tail(proc.stdout)}"
        )
    return proc


def timed(
    cmd: Sequence[str], cwd: Path | str | None = None, env: Mapping[str, str] | None = None
) -> float:
    """Wall-clock seconds of one run of `cmd` (raises if it fails)."""
    start = time.perf_counter()
    run_checked(cmd, cwd=cwd, env=env)
    return time.perf_counter() - start


def _command(cmd: Command, index: int) -> Sequence[str]:
    return cmd(index) if callable(cmd) else cmd


def interleaved(
    baseline_cmd: Command,
    candidate_cmd: Command,
    runs: int,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[list[float], list[float]]:
    """One uncounted warm-up of each, then `runs` alternating timed runs: baseline, candidate, ..."""
    timed(_command(baseline_cmd, 0), cwd=cwd, env=env)
    timed(_command(candidate_cmd, 0), cwd=cwd, env=env)
    base: list[float] = []
    cand: list[float] = []
    for index in range(1, runs + 1):
        base.append(timed(_command(baseline_cmd, index), cwd=cwd, env=env))
        cand.append(timed(_command(candidate_cmd, index), cwd=cwd, env=env))
    return base, cand


def summary(
    name: str, base: Sequence[float], cand: Sequence[float], target_ratio: float
) -> dict[str, Any]:
    """Medians of both, their ratio (candidate / baseline), the target and whether it is met."""
    base_median = statistics.median(base)
    cand_median = statistics.median(cand)
    ratio = cand_median / base_median
    return {
        "name": name,
        "runs": len(cand),
        "baseline_median_s": round(base_median, 4),
        "candidate_median_s": round(cand_median, 4),
        "baseline_s": [round(x, 4) for x in base],
        "candidate_s": [round(x, 4) for x in cand],
        "ratio": round(ratio, 3),
        "target_ratio": target_ratio,
        "ok": ratio <= target_ratio,
    }


def report(results: dict[str, Any], as_json: bool) -> None:
    """Print `results` as one JSON object, or as a few readable lines."""
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
        return
    if "ratio" in results:
        sys.stdout.write(
            f"{results['name']}: candidate {results['candidate_median_s']:.3f} s, "
            f"baseline {results['baseline_median_s']:.3f} s (medians of {results['runs']}); "
            f"ratio {results['ratio']:.2f}, target <= {results['target_ratio']} -> "
            f"{'OK' if results['ok'] else 'MISSED'}\n"
        )
        return
    for key, value in results.items():
        sys.stdout.write(f"{key}: {value}\n")
