"""Cost of the ``ray`` check: ``scaffold verify --quick`` with and without the Ray config.

Two folders are generated once from the small CNN (``--no-verify``): one plain, one with
``--ray``. The baseline is ``scaffold verify --quick --json`` on the plain folder (import,
features, factory); the candidate is the same on the ``--ray`` folder, which adds the ``ray``
check: iterate's Ray CLI parser, a one-CPU local Ray instance and a worker that imports the
package and TerraTorch, builds the backbone and returns its channels. Reported: the medians, their
ratio and the seconds the check adds. Target: added seconds <= 10 (the check's cost is mostly the
worker's import of TerraTorch, 7-9 s on this machine).

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

TARGET_ADDED_S = 10.0


def generate(target: str, out: Path, *extra: str) -> Path:
    run_checked([SCAFFOLD, "new-backbone", target, "--out", str(out), "--no-verify", *extra])
    return out


def verify_cmd(out: Path) -> list[str]:
    return [SCAFFOLD, "verify", str(out), "--quick", "--json"]


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=3)
    # A short path: Ray's sockets under the config's tmp_dir must stay within 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-", dir="/tmp"))
    try:
        target = f"{write_cnn(tmp)}:{CNN_CLASS}"
        plain = generate(target, tmp / "plain", "--name", "bench_plain")
        with_ray = generate(target, tmp / "ray", "--name", "bench_ray", "--ray")
        proc = run_checked(verify_cmd(with_ray))
        checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
        if not checks.get("ray", {}).get("ok"):
            raise RuntimeError(f"the ray check did not pass: {checks.get('ray')}")
        base, cand = interleaved(verify_cmd(plain), verify_cmd(with_ray), args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = summary("verify --quick: with the ray check / without", base, cand, 1.0)
    added = results["candidate_median_s"] - results["baseline_median_s"]
    results |= {
        "added_s": round(added, 2),
        "target_added_s": TARGET_ADDED_S,
        "ok": added <= TARGET_ADDED_S,
    }
    del results["target_ratio"]
    if args.json:
        report(results, as_json=True)
    else:
        print(
            f"{results['name']}: {results['candidate_median_s']:.2f} s vs "
            f"{results['baseline_median_s']:.2f} s (medians of {results['runs']}); ratio "
            f"{results['ratio']:.2f}; the check adds {added:.1f} s, target <= {TARGET_ADDED_S} s "
            f"-> {'OK' if results['ok'] else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
