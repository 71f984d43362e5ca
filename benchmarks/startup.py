"""Start-up time of the CLI: ``scaffold --help`` against ``python -c "import typer"``.

The heavy imports (torch, timm, terratorch, ...) happen inside the commands, so printing the
help should cost little more than importing Typer. Target: median ratio <= 1.5.

    python benchmarks/startup.py [--runs 5] [--json]
"""

from __future__ import annotations

from _common import PYTHON, SCAFFOLD, interleaved, parse_args, report, summary

TARGET_RATIO = 1.5


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=5)
    baseline = [PYTHON, "-c", "import typer"]
    candidate = [SCAFFOLD, "--help"]
    base, cand = interleaved(baseline, candidate, args.runs)
    name = "startup (scaffold --help vs import typer)"
    report(summary(name, base, cand, TARGET_RATIO), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
