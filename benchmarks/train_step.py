"""Speed of a training step of the generated backbone on a UNet against one of its encoder alone.

The target is the suite's UNet (``tests/models/unet.py`` at width 16, as in encoder_stop.py: an
encoder of four levels, r1 to r8, and a decoder back to r1 on the skips). ``scaffold new-backbone
--no-verify`` generates its backbone; the candidate is a forward of that backbone (the four encoder
levels as features, through the runtime's hooks) and a backward of the sum of their means; the
baseline is the same step through ``model.encoder(x)`` on the same model instance. Train mode, one
thread, gradients set to None before each step, a (2, 3, 128, 128) input; a run is five steps of each,
alternating step by step (baseline, candidate, ...; the order swapped each run) after one
uncounted warm-up of each.
Target: median ratio <= 1.05.

    python benchmarks/train_step.py [--runs 7] [--json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import import_unet_backbone, parse_args, report, summary

TARGET_RATIO = 1.05
INPUT_SHAPE = (2, 3, 128, 128)
STEPS_PER_RUN = 5
THREADS = 1  # one intra-op thread: steadier timings on a shared machine
NAME = "bench_unet_train"


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=7)
    with tempfile.TemporaryDirectory(prefix="bench-train-step-") as tmp:
        import_unet_backbone(Path(tmp) / "out", NAME, INPUT_SHAPE)
        import timm
        import torch

        backbone = timm.create_model(NAME).train()
        model = backbone.model  # the same instance: the backbone holds the encoder
        torch.set_num_threads(THREADS)
        x = torch.rand(*INPUT_SHAPE)
        features, encoder = backbone(x), model.encoder(x)
        if [f.shape for f in features] != [e.shape for e in encoder]:
            raise RuntimeError("the backbone's features are not the encoder's outputs")

        def step(forward) -> None:
            backbone.zero_grad(set_to_none=True)
            loss = sum(f.mean() for f in forward(x))
            loss.backward()

        def timed(forward) -> float:
            start = time.perf_counter()
            step(forward)
            return time.perf_counter() - start

        kinds = {"baseline": model.encoder, "candidate": backbone}
        for forward in kinds.values():
            timed(forward)  # warm-up, not counted
        times: dict[str, list[float]] = {"baseline": [], "candidate": []}
        for index in range(args.runs):
            # Step by step, alternating (the order swapped each run), so that both see the
            # same load on a shared machine.
            run = dict.fromkeys(kinds, 0.0)
            order = list(kinds) if index % 2 == 0 else list(reversed(kinds))
            for _ in range(STEPS_PER_RUN):
                for kind in order:
                    run[kind] += timed(kinds[kind])
            for kind, seconds in run.items():
                times[kind].append(seconds)
    name = "train step (generated backbone's forward+backward on a UNet vs its encoder's)"
    report(summary(name, times["baseline"], times["candidate"], TARGET_RATIO), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
