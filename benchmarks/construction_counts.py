"""How many times ``scaffold inspect`` and ``scaffold new-backbone`` construct the person's model.

A slow constructor (a model that downloads or initialises for seconds) is paid once per
construction, so the count is what such a person waits for. The model is
``tests/models/counted.py:CountedCNN``, a small CNN whose constructor appends a line (the
device it is built on) to the file named by $SCAFFOLD_COUNT_FILE. Each command runs in a fresh
process and a fresh folder; the counts are deterministic, so one run each is enough.

    python benchmarks/construction_counts.py [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

from _common import SCAFFOLD, clean_env, run_checked

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "models" / "counted.py"
TARGET = f"{MODEL}:CountedCNN"

# name -> the command's arguments after `scaffold` ({out}: a fresh output folder).
COMMANDS = {
    "inspect": ["inspect", TARGET],
    "new-backbone --no-verify": ["new-backbone", TARGET, "--out", "{out}", "--no-verify"],
    "new-backbone": ["new-backbone", TARGET, "--out", "{out}"],
}


def count(args: list[str], folder: Path) -> dict[str, int]:
    """Run `scaffold ARGS` in `folder`; the constructions it made, by device and in all."""
    log = folder / "constructions.txt"
    env = clean_env() | {"SCAFFOLD_COUNT_FILE": str(log)}
    argv = [SCAFFOLD, *(a.replace("{out}", str(folder / "out")) for a in args)]
    run_checked(argv, cwd=folder, env=env)
    devices = log.read_text(encoding="utf-8").split() if log.exists() else []
    return {"total": len(devices), **collections.Counter(devices)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    as_json = parser.parse_args().json
    results: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-constructions-") as tmp:
        for i, (name, args) in enumerate(COMMANDS.items()):
            folder = Path(tmp) / f"run{i}"
            folder.mkdir()
            results[name] = count(args, folder)
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
    else:
        for name, counts in results.items():
            by_device = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "total")
            sys.stdout.write(f"scaffold {name}: {counts['total']} ({by_device})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
