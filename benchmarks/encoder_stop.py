"""Speed of the generated backbone's forward on a whole UNet against a forward of its encoder alone.

The target is the suite's UNet (``tests/models/unet.py`` at width 16: an encoder of four levels,
r1 to r8, and a decoder back to r1 that takes the encoder's maps as skips, so the decoder costs
about as much as the encoder). ``scaffold new-backbone --no-verify`` generates its backbone; the candidate is
that backbone's ``forward`` (the four encoder levels as features), the baseline is
``model.encoder(x)`` on the same model instance, a forward of the encoder half and nothing else.
The whole model's forward (built with ``prune=False``, so the decoder is there) is timed with
them, for reference: what the backbone cost before it stopped after its last feature. All run in one process on one thread, eval mode, no grad, on a
(2, 3, 128, 128) input; a run is ten forwards, and runs interleave (baseline, candidate, whole,
then the same rotated by one, ...) after one uncounted warm-up of each. Target: median ratio
<= 1.05.

    python benchmarks/encoder_stop.py [--runs 7] [--json]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import import_unet_backbone, parse_args, report, summary

TARGET_RATIO = 1.05
INPUT_SHAPE = (2, 3, 128, 128)
FORWARDS_PER_RUN = 10
THREADS = 1  # one intra-op thread: steadier timings on a shared machine
NAME = "bench_unet"


def timed(fn) -> float:
    start = time.perf_counter()
    for _ in range(FORWARDS_PER_RUN):
        fn()
    return time.perf_counter() - start


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], default_runs=7)
    with tempfile.TemporaryDirectory(prefix="bench-encoder-stop-") as tmp:
        import_unet_backbone(Path(tmp) / "out", NAME, INPUT_SHAPE)
        import timm
        import torch

        backbone = timm.create_model(NAME).eval()
        model = backbone.model  # without its decoder: the backbone is built without it
        # The whole model (decoder included), for reference, with the backbone's encoder.
        whole_model = timm.create_model(NAME, prune=False).model.eval()
        whole_model.load_state_dict(model.state_dict(), strict=False)
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
                return whole_model(x)

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
