"""Speed and memory of scaffold's band statistics against a bare read of every training pixel.

The script writes a dataset of multi-band GeoTIFFs (6 bands, 1024x1024, uint16; DEFLATE-compressed
and tiled by default, as GeoTIFF datasets usually are; ``--compress none`` for raw strips) of
about ``--gib`` GiB of pixels under ``train/images/``. The candidate is scaffold's statistics
pass over those training images (``scaffold.data.read.band_statistics`` with no pixel limit:
every pixel, streamed window by window); the baseline is a bare script that opens each file with
rasterio and reads it whole, once. Both run in fresh processes, interleaved, and report their
peak RSS (VmHWM: ru_maxrss would count the parent's, which exec keeps); the candidate runs again on the first half of the files, to show that its peak RSS does
not grow with the dataset. Targets: median ratio <= 1.3; peak RSS at the full size within 64 MiB
of the half size. The dataset is deleted at the end.

    python benchmarks/data_stats.py [--runs 3] [--gib 2] [--compress deflate|none] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _common import PYTHON, interleaved, report, run_checked, summary

TARGET_RATIO = 1.3
RSS_SLACK_MIB = 64
BANDS, SIZE = 6, 1024
FILE_BYTES = BANDS * SIZE * SIZE * 2

CANDIDATE = r"""
import json, sys
from pathlib import Path
from scaffold.data.read import band_statistics
files = sorted(Path(sys.argv[1]).glob("*.tif"))[: int(sys.argv[2])]
means, stds, used, total = band_statistics(files, 6, max_pixels=None)
assert used == total
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"rss_mib": rss, "pixels": used, "means": means}))
"""

BASELINE = r"""
import json, sys
from pathlib import Path
import rasterio
files = sorted(Path(sys.argv[1]).glob("*.tif"))[: int(sys.argv[2])]
pixels = 0
for path in files:
    with rasterio.open(path) as src:
        pixels += src.read().shape[-1] * src.height
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"rss_mib": rss, "pixels": pixels}))
"""


def write_dataset(root: Path, files: int, compress: str) -> None:
    """Smooth fields plus noise per band (compressible as real scenes are, not trivially)."""
    import numpy as np
    import rasterio

    folder = root / "train" / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": BANDS, "dtype": "uint16"}
    if compress != "none":
        profile |= {"compress": compress, "predictor": 2, "tiled": True}
        profile |= {"blockxsize": 256, "blockysize": 256}
    for i in range(files):
        level = rng.uniform(300, 3000, (BANDS, 1, 1))
        phase = rng.uniform(0, 6.3, (BANDS, 1, 1))
        field = level * (1 + 0.3 * np.sin(6 * xx + phase) * np.cos(4 * yy + phase))
        noise = rng.normal(0, 40, (BANDS, SIZE, SIZE))
        with rasterio.open(folder / f"tile{i:04d}_img.tif", "w", **profile) as dst:
            dst.write(np.clip(field + noise, 0, 65535).astype(np.uint16))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gib", type=float, default=2.0, help="GiB of pixels (default 2)")
    parser.add_argument("--compress", default="deflate", help="deflate (default), lzw or none")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = max(2, round(args.gib * (1 << 30) / FILE_BYTES))
    with tempfile.TemporaryDirectory(prefix="bench-data-stats-") as tmp:
        root = Path(tmp)
        print(f"writing {files} files ({files * FILE_BYTES / (1 << 30):.2f} GiB)", file=sys.stderr)
        write_dataset(root, files, args.compress)
        images = str(root / "train" / "images")
        base_cmd = [PYTHON, "-c", BASELINE, images, str(files)]
        cand_cmd = [PYTHON, "-c", CANDIDATE, images, str(files)]
        base, cand = interleaved(base_cmd, cand_cmd, args.runs, cwd=root)
        full = json.loads(run_checked(cand_cmd).stdout)
        half = json.loads(run_checked([PYTHON, "-c", CANDIDATE, images, str(files // 2)]).stdout)
        bare = json.loads(run_checked(base_cmd).stdout)
        disk = sum(p.stat().st_size for p in (root / "train" / "images").iterdir())
    name = (
        f"band statistics over {files} files, {files * FILE_BYTES / (1 << 30):.2f} GiB of pixels "
        f"({disk / (1 << 30):.2f} GiB on disk, {args.compress}) vs a bare rasterio read"
    )
    result = summary(name, base, cand, TARGET_RATIO)
    growth = full["rss_mib"] - half["rss_mib"]
    result |= {
        "peak_rss_mib": {
            f"{files // 2} files": round(half["rss_mib"], 1),
            f"{files} files": round(full["rss_mib"], 1),
            "bare read": round(bare["rss_mib"], 1),
        },
        "rss_growth_mib": round(growth, 1),
        "rss_ok": growth <= RSS_SLACK_MIB,
    }
    result["ok"] = result["ok"] and result["rss_ok"]
    report(result, args.json)
    if not args.json:
        print(f"peak RSS: {result['peak_rss_mib']} (growth {growth:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
