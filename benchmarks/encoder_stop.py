"""Speed of the generated backbone's forward on a whole UNet against a forward of its encoder alone.

The target is a UNet-like segmentation network (``BenchUNet``: an encoder of four levels, r1 to r8,
and a decoder back to r1 that takes the encoder's maps as skips, so the decoder costs about as much
as the encoder). ``scaffold new-backbone --no-verify`` generates its backbone; the candidate is
that backbone's ``forward`` (the four encoder levels as features), the baseline is
``model.encoder(x)`` on the same model instance, a forward of the encoder half and nothing else.
The whole model's forward is timed with them, for reference: what the backbone cost before it
stopped after its last feature. All run in one process on one thread, eval mode, no grad, on a
(2, 3, 128, 128) input; a run is ten forwards, and runs interleave (baseline, candidate, whole,
then the same rotated by one, ...) after one uncounted warm-up of each. Target: median ratio
<= 1.1.

    python benchmarks/encoder_stop.py [--runs 7] [--json]
"""

from __future__ import annotations

import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import SCAFFOLD, parse_args, report, run_checked, summary

TARGET_RATIO = 1.1
INPUT_SHAPE = (2, 3, 128, 128)
FORWARDS_PER_RUN = 10
THREADS = 1  # one intra-op thread: steadier timings on a shared machine
NAME = "bench_unet"

UNET_SOURCE = '''"""A UNet for the benchmarks: the decoder costs about as much as the encoder."""

import torch
from torch import nn


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(),
    )


class Encoder(nn.Module):
    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__()
        self.stem = double_conv(in_chans, width)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), double_conv(width, 2 * width))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), double_conv(2 * width, 4 * width))
        self.down3 = nn.Sequential(nn.MaxPool2d(2), double_conv(4 * width, 8 * width))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = [self.stem(x)]
        for down in (self.down1, self.down2, self.down3):
            skips.append(down(skips[-1]))
        return skips


class Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, 2)
        self.conv = double_conv(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class Decoder(nn.Module):
    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.up3 = Up(8 * width, 4 * width)
        self.up2 = Up(4 * width, 2 * width)
        self.up1 = Up(2 * width, width)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.up3(skips[3], skips[2])
        x = self.up2(x, skips[1])
        return self.head(self.up1(x, skips[0]))


class BenchUNet(nn.Module):
    def __init__(self, in_chans: int = 3, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        self.encoder = Encoder(in_chans, width)
        self.decoder = Decoder(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
'''


def timed(fn) -> float:
    start = time.perf_counter()
    for _ in range(FORWARDS_PER_RUN):
        fn()
    return time.perf_counter() - start


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=7)
    with tempfile.TemporaryDirectory(prefix="bench-encoder-stop-") as tmp:
        folder = Path(tmp)
        (folder / "bench_unet_model.py").write_text(UNET_SOURCE)
        out = folder / "out"
        run_checked(
            [
                SCAFFOLD,
                "new-backbone",
                f"{folder / 'bench_unet_model.py'}:BenchUNet",
                "--name",
                NAME,
                "--out",
                str(out),
                "--input-shape",
                ",".join(map(str, INPUT_SHAPE[1:])),
                "--no-verify",
            ]
        )
        import timm
        import torch

        sys.path.insert(0, str(out))
        importlib.import_module(NAME)
        backbone = timm.create_model(NAME).eval()
        model = backbone.model
        torch.set_num_threads(THREADS)
        x = torch.rand(*INPUT_SHAPE)
        with torch.no_grad():
            features, encoder = backbone(x), model.encoder(x)
            if [f.shape for f in features] != [e.shape for e in encoder]:
                raise RuntimeError("the backbone's features are not the encoder's outputs")

            def baseline() -> object:
                return model.encoder(x)

            def candidate() -> object:
                return backbone(x)

            def whole() -> object:
                return model(x)

            timed(baseline), timed(candidate), timed(whole)  # warm-up, not counted
            times: dict[str, list[float]] = {"baseline": [], "candidate": [], "whole": []}
            kinds = {"baseline": baseline, "candidate": candidate, "whole": whole}
            order = list(kinds)
            for index in range(args.runs):
                # Rotate the order, so that none always follows another.
                for kind in order[index % 3 :] + order[: index % 3]:
                    times[kind].append(timed(kinds[kind]))
        base, cand, full = times["baseline"], times["candidate"], times["whole"]
    name = "encoder stop (generated backbone's forward on a UNet vs its encoder's forward)"
    results = summary(name, base, cand, TARGET_RATIO)
    results["whole_model_median_s"] = round(statistics.median(full), 4)
    results["whole_vs_encoder_ratio"] = round(statistics.median(full) / statistics.median(base), 3)
    report(results, args.json)
    if not args.json:
        sys.stdout.write(
            f"whole model (encoder + decoder): {results['whole_model_median_s']:.3f} s, "
            f"{results['whole_vs_encoder_ratio']:.2f}x the encoder\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
