"""Cost of the ``ray`` check: ``scaffold verify`` with and without the Ray config.

Two folders are generated once from the small CNN (``--no-verify``): one plain, one with
``--ray``. For ``verify --quick --json`` (import, features, determinism, factory, sizes) and for
the whole ``verify --json`` (with the benchmark run), the baseline is the plain folder and the
candidate the ``--ray`` folder, which adds the ``ray`` check: iterate's Ray CLI parser, a
one-CPU local Ray instance and a worker that imports the package and TerraTorch, builds the
backbone and returns its channels. Verify starts Ray before its first check and collects the
answer last, so the check adds what is left of Ray's start-up and the worker's import once the
other checks are done. Reported for each: the medians, their ratio and the seconds the check adds.
Target: added seconds <= 5 for both.

    python benchmarks/ray_check.py [--runs 3] [--json]
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from _common import (
    CNN_CLASS,
    SCAFFOLD,
    interleaved,
    parse_args,
    report,
    run_checked,
    summary,
    write_cnn,
)

TARGET_ADDED_S = 5.0


def generate(target: str, out: Path, *extra: str) -> Path:
    run_checked([SCAFFOLD, "new-backbone", target, "--out", str(out), "--no-verify", *extra])
    return out


def verify_cmd(out: Path, quick: bool) -> list[str]:
    return [SCAFFOLD, "verify", str(out), "--json", *(["--quick"] if quick else [])]


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=3)
    # A short path: Ray's sockets under the config's tmp_dir must stay within 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-", dir="/tmp"))
    results = {}
    try:
        target = f"{write_cnn(tmp)}:{CNN_CLASS}"
        plain = generate(target, tmp / "plain", "--name", "bench_plain")
        with_ray = generate(target, tmp / "ray", "--name", "bench_ray", "--ray")
        proc = run_checked(verify_cmd(with_ray, quick=True))
        checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
        if not checks.get("ray", {}).get("ok"):
            raise RuntimeError(f"the ray check did not pass: {checks.get('ray')}")
        for mode, quick in (("verify --quick", True), ("verify", False)):
            base, cand = interleaved(
                verify_cmd(plain, quick), verify_cmd(with_ray, quick), args.runs
            )
            found = summary(f"{mode}: with the ray check / without", base, cand, 1.0)
            added = found["candidate_median_s"] - found["baseline_median_s"]
            found |= {"added_s": round(added, 2), "ok": added <= TARGET_ADDED_S}
            del found["target_ratio"]
            results[mode] = found
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        report({"target_added_s": TARGET_ADDED_S, **results}, as_json=True)
        return 0
    for found in results.values():
        print(
            f"{found['name']}: {found['candidate_median_s']:.2f} s vs "
            f"{found['baseline_median_s']:.2f} s (medians of {found['runs']}); ratio "
            f"{found['ratio']:.2f}; the check adds {found['added_s']:.1f} s, target <= "
            f"{TARGET_ADDED_S} s -> {'OK' if found['ok'] else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
