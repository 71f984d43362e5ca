"""Feature taps against timm's zoo: scaffold's measured features vs the feature_info timm declares.

For every architecture family of timm (a module of ``timm.models`` whose models declare a
``feature_info``) the script picks one model by a fixed rule: the fewest parameters among the
family's registered names (``timm.list_models(module=...)``, built on the meta device, so no
weights are allocated), ties broken by name, among those that build and have a ``feature_info``.
It runs ``scaffold inspect timm.models.<module>:<name> --input-shape C,H,W --json`` on the builder
function at the model's default input size (its ``pretrained_cfg["input_size"]``), and holds the
``(num_chs, reduction)`` list scaffold measured against the list timm's authors wrote.

The doubts the analysis records (``scaffold.analyse.doubts``) are listed per family too: a doubt
on a family whose list agrees with timm's is a false alarm.

A family agrees when the lists are equal, or equal after extra finer levels at the start (a stem
at a smaller reduction than timm's first feature). Prints the agreement and each miss with both
lists. Target: at least 97% of families agree. It takes several minutes (one ``scaffold`` process
per family); ``--only`` runs a subset, ``--selection FILE`` keeps the chosen models between runs,
``--in-process`` calls the analysis that ``scaffold inspect`` runs in this process (no start-up per
family: faster on a busy machine, same taps).

    python benchmarks/timm_zoo.py [--only efficientnet,densenet] [--selection zoo.json]
                                  [--in-process] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from _common import SCAFFOLD

TARGET = 0.97


def feature_list(info: Any) -> list[tuple[int, int]]:
    return [(int(f["num_chs"]), int(f["reduction"])) for f in info]


def select_models(only: set[str] | None) -> list[dict[str, Any]]:
    """One model per family: the fewest parameters (meta device), ties broken by name."""
    import timm
    import torch
    from timm.models import _registry

    warnings.filterwarnings("ignore")
    chosen = []
    for module in sorted(_registry._module_to_models):
        if only is not None and module not in only:
            continue
        best: tuple[int, str] | None = None
        found: dict[str, Any] = {}
        for name in timm.list_models(module=module):
            try:
                with torch.device("meta"):
                    model = timm.create_model(name)
            except Exception:
                continue
            info = getattr(model, "feature_info", None)
            if not isinstance(info, list) or not info:
                continue
            key = (sum(p.numel() for p in model.parameters()), name)
            if best is None or key < best:
                best = key
                found = {
                    "family": module,
                    "model": name,
                    "params": key[0],
                    "input_size": list(model.pretrained_cfg["input_size"]),
                    "timm": feature_list(info),
                }
        if found:
            chosen.append(found)
    return chosen


def inspect(
    entry: dict[str, Any], timeout: float
) -> tuple[list[tuple[int, int]] | None, str, list[str]]:
    """scaffold's (num_chs, reduction) list for the entry, or None and the error line; and the
    doubts the analysis recorded (its kinds and messages)."""
    shape = ",".join(map(str, entry["input_size"]))
    target = f"timm.models.{entry['family']}:{entry['model']}"
    cmd = [SCAFFOLD, "inspect", target, "--input-shape", shape, "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s", []
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        return None, lines[-1], []
    spec = json.loads(proc.stdout)
    doubts = [f"{d['kind']}: {d['message']}" for d in spec.get("doubts", [])]
    return feature_list(spec["features"]), "", doubts


def inspect_in_process(
    entry: dict[str, Any],
) -> tuple[list[tuple[int, int]] | None, str, list[str]]:
    """The same analysis as `scaffold inspect`, called in this process."""
    from scaffold.errors import ScaffoldError
    from scaffold.pipeline import analyse

    target = f"timm.models.{entry['family']}:{entry['model']}"
    try:
        spec = analyse(target, {}, tuple(entry["input_size"]))
    except ScaffoldError as exc:
        return None, str(exc), []
    doubts = [f"{d.kind}: {d.message}" for d in spec.doubts]
    return [(f.num_chs, f.reduction) for f in spec.features], "", doubts


def agrees(ours: list[tuple[int, int]], theirs: list[tuple[int, int]]) -> bool:
    """Equal, or equal after extra levels at the start that are finer than timm's first."""
    if ours == theirs:
        return True
    extra = len(ours) - len(theirs)
    if extra <= 0 or ours[extra:] != theirs:
        return False
    return all(r < theirs[0][1] for _, r in ours[:extra])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated timm.models modules to run")
    parser.add_argument("--selection", type=Path, help="JSON file to read/write the chosen models")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per model")
    parser.add_argument("--in-process", action="store_true", help="no scaffold process per model")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None

    if args.selection is not None and args.selection.exists():
        chosen = json.loads(args.selection.read_text())
        if only is not None:
            chosen = [e for e in chosen if e["family"] in only]
    else:
        chosen = select_models(only)
        if args.selection is not None:
            args.selection.write_text(json.dumps(chosen, indent=1))

    results = []
    for entry in chosen:
        if args.in_process:
            ours, error, doubts = inspect_in_process(entry)
        else:
            ours, error, doubts = inspect(entry, args.timeout)
        theirs = [(c, r) for c, r in entry["timm"]]
        ok = ours is not None and agrees(ours, theirs)
        results.append({**entry, "scaffold": ours, "error": error, "agrees": ok, "doubts": doubts})
        if not args.json:
            mark = "ok  " if ok else "MISS"
            sys.stderr.write(f"{mark} {entry['family']}:{entry['model']}\n")

    n_ok = sum(r["agrees"] for r in results)
    share = n_ok / len(results) if results else 0.0
    summary = {
        "families": len(results),
        "agree": n_ok,
        "share": round(share, 4),
        "target": TARGET,
        "ok": share >= TARGET,
        "misses": [r for r in results if not r["agrees"]],
        "doubted": [r for r in results if r["doubts"]],
    }
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return 0
    for r in summary["misses"]:
        sys.stdout.write(f"MISS {r['family']}:{r['model']} at {tuple(r['input_size'])}\n")
        sys.stdout.write(f"  timm:     {[tuple(x) for x in r['timm']]}\n")
        if r["scaffold"] is None:
            sys.stdout.write(f"  scaffold: error: {r['error']}\n")
        else:
            sys.stdout.write(f"  scaffold: {[tuple(x) for x in r['scaffold']]}\n")
    for r in summary["doubted"]:
        sys.stdout.write(f"DOUBT {r['family']}:{r['model']}\n")
        for line in r["doubts"]:
            sys.stdout.write(f"  {line}\n")
    sys.stdout.write(f"{len(summary['doubted'])} of {len(results)} families have a doubt\n")
    sys.stdout.write(
        f"{n_ok} of {len(results)} families agree ({share:.0%}), target >= {TARGET:.0%} -> "
        f"{'OK' if summary['ok'] else 'MISSED'}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
