"""The verify stage: prove a generated backbone works, fast checks first, the benchmark run last.

0. ``folder``: the YAML runs this folder (not the one it was copied or moved from), and no
   generated file holds conflict markers;
   ``geobench data`` (with GEO-Bench tasks): no sample's pickled attributes name anything
   GEO-Bench does not write (TerraTorch's readers unpickle them); a failure stops the ladder;
1. ``import``: the package imports; timm, BACKBONE_REGISTRY and MODEL_FACTORY_REGISTRY know it;
   ``doubts`` (when the analysis recorded any): each doubt with the flag that settles it; the
   other checks still run, but the backbone is not "verified";
2. ``features``: timm's feature rules on ``features_only`` and on the backbone's own forward;
   ``features match model``: the features' values are those of hooks on a plain instance of the
   model at the recorded taps, at two sizes, and each carries a gradient (``reference.py``);
   ``determinism``: the same input twice gives the same features, every token there;
   ``forward args`` (per-band forward arguments): one value per band of ``backbone_in_chans``;
3. ``data`` (with the smoke data): each smoke file has the bands and size the smoke task reads
   (``smoke_data.py``);
   ``factory``: the config's factory builds the task's model; forward and backward run;
   ``trainable``: on a real batch of the task, every trainable parameter gets a gradient (what
   Lightning's DDP needs); ``fit configs``: each ``fit/<task>.yaml`` as ``terratorch fit``
   meets it: its settings and paths, TerraTorch's CLI builds what it names, and one training
   batch of its data goes through the task's model (``fit.py``);
   ``tracks`` (with the frozen track): one training step of a frozen task leaves its encoder's
   parameters unchanged, and one of a full_ft task changes them (``tracks.py``);
   ``sizes``: the features on their grids at the analysed size and at twice it (``sizes.py``);
4. ``weights`` (with ``--weights``): the checkpoint's keys fit the model;
   ``band weights`` (with ``--weights`` and ``--bands``, a model of one input): each task's first layer holds the
   checkpoint's weights of its bands, by name (``band_weights.py``);
5. ``benchmark``: the YAML runs as ``terratorch iterate --hpo --config FILE`` runs it, to a finite
   metric. All in one process, so TerraTorch is imported once;
   ``iterate2`` (with ``iterate2/``): one trial per task through terratorch-iterate's
   ``iterate``; the value Optuna stored is the one the trial printed (``iterate2.py``);
6. ``ray`` (with ``benchmark_ray.yaml``): iterate's Ray CLI parses it; a Ray worker elsewhere
   imports the package by name and builds the backbone (scaffold/verify/ray_check.py). Ray is
   started in a process of its own before the first check and its answer collected last, so
   that Ray's start-up and the worker's import of TerraTorch run alongside the other checks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from scaffold.console import status
from scaffold.errors import ScaffoldError, one_line
from scaffold.verify import checks
from scaffold.verify.band_weights import check_band_weights
from scaffold.verify.determinism import check_determinism, check_forward_args
from scaffold.verify.fit import check_fit, fit_files
from scaffold.verify.folder import check_folder
from scaffold.verify.geobench import check_geobench_data, reads_geobench
from scaffold.verify.reference import check_reference
from scaffold.verify.sizes import check_sizes
from scaffold.verify.smoke_data import check_smoke_data
from scaffold.verify.tracks import check_tracks, tracked_files
from scaffold.verify.trainable import check_trainable
from scaffold.verify.types import Check, CheckFailed, VerifyReport
from scaffold.write.journal import roll_back, say_rolled_back
from scaffold.write.names import RAY_CONFIG_FILE, STATE_DIR
from scaffold.write.state import locked, read_state


def verify_dir(directory: Path, quick: bool = False, progress=None) -> VerifyReport:
    """Run the ladder on a directory made by `scaffold new-backbone` (stops before the
    benchmark run when `quick`)."""

    directory = Path(directory).resolve()
    read_state(directory)  # ScaffoldError when DIR is not a generated backbone
    with locked(directory):  # not while an update rewrites it
        # An update killed half way is rolled back first: verify what the state describes.
        done = roll_back(directory)
        if done is not None:
            say_rolled_back(progress, done)
        return _verify_locked(directory, read_state(directory), quick, progress)


def _verify_locked(directory: Path, state, quick: bool, progress) -> VerifyReport:
    probe = None
    if (directory / RAY_CONFIG_FILE).is_file():  # Ray starts now, alongside the other checks
        from scaffold.verify.ray_check import start_probe

        probe = start_probe(directory)
    try:
        # From the folder, as every command that runs its YAML (their paths are relative to it).
        with contextlib.chdir(directory):
            return _ladder(directory, state, quick, progress, probe)
    finally:
        if probe is not None:
            probe.close()


def check_doubts(doubts) -> str:
    """The analysis's doubts (``BackboneSpec.doubts``) as a finding: each one, with the flag that
    settles it. A backbone the analysis is unsure of is generated, never "verified"."""
    raise CheckFailed("; ".join(str(d) for d in doubts))


def _ladder(directory: Path, state, quick: bool, progress, probe) -> VerifyReport:

    context = checks.Context.load(directory, state)
    report = VerifyReport(directory)

    def run(name: str, fn: Callable[[], str]) -> bool:
        start = time.perf_counter()
        try:
            with status(progress, f"verify: {name}"):
                detail, ok = fn(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except ScaffoldError:
            raise
        except Exception as exc:  # a bug in generated or hand-edited code: still a finding
            detail, ok = f"unexpected error: {one_line(exc)}", False
        seconds = time.perf_counter() - start
        report.checks.append(Check(name, ok, detail, seconds))
        if progress is not None:
            mark = "[green]ok[/]" if ok else "[red]FAILED[/]"
            progress.print(f"{mark} {name} ({seconds:.1f}s)", highlight=False)
        return ok

    if not run("folder", lambda: check_folder(directory, state, context.config_path)):
        return report
    # Before anything lets a TerraTorch reader open a sample: its pickles could run code.
    if reads_geobench(context) and not run("geobench data", lambda: check_geobench_data(context)):
        return report
    if not run("import", context.check_import):
        return report
    if state.spec.doubts:  # weak evidence is never "verified"; the checks still run
        run("doubts", lambda: check_doubts(state.spec.doubts))

    passed = [
        run("features", context.check_features),
        run("features match model", lambda: check_reference(context)),
        run("determinism", lambda: check_determinism(context)),
    ]
    if state.spec.forward_call.per_band:
        passed.append(run("forward args", lambda: check_forward_args(context)))
    if state.data_files:  # the smoke data: what the smoke task reads
        passed.append(run("data", lambda: check_smoke_data(context)))
    passed.append(run("factory", context.check_factory))

    passed.append(run("trainable", lambda: check_trainable(context)))

    if fit_files(state):
        passed.append(run("fit configs", lambda: check_fit(context)))
    if tracked_files(state):  # the frozen track: its encoder stays, the full track's learns
        passed.append(run("tracks", lambda: check_tracks(context)))

    run("sizes", lambda: check_sizes(context))  # the benchmark runs at the analysed size anyway
    if state.options.weights is not None:
        passed.append(run("weights", context.check_weights))
        # (a model with several inputs takes each one's bands whole: none is chosen by name)
        if state.options.bands and not state.spec.forward_call.modalities:
            passed.append(run("band weights", lambda: check_band_weights(context)))
    if not quick and all(passed):
        from scaffold.verify.benchmark import run_benchmark

        log_dir = directory / STATE_DIR / "runs" / time.strftime("%Y%m%d-%H%M%S")
        report.log_dir = log_dir
        if progress is not None:
            progress.print(
                f"running the benchmark YAML (log in {log_dir})", highlight=False, soft_wrap=True
            )
        run("benchmark", lambda: run_benchmark(context.config_path, log_dir))
        from scaffold.results.baselines import configs_of

        for name, path in configs_of(directory, state.options.baselines):
            check = f"baseline {name}"
            if not path.is_file():
                report.checks.append(Check(check, False, f"{path} is missing (deleted?)"))
                continue
            run(check, partial(run_benchmark, path, log_dir / "baselines" / name))
        from scaffold.verify.iterate2 import check_iterate2, iterate2_files

        if iterate2_files(state):  # one trial per task through terratorch-iterate's `iterate`
            run("iterate2", lambda: check_iterate2(directory, log_dir))
    elif not quick:
        report.checks.append(Check("benchmark", False, "skipped: an earlier check failed"))
    if probe is not None or (directory / RAY_CONFIG_FILE).is_file():
        # Last: Ray's start-up and its worker's import have run alongside every other check.
        from scaffold.verify.ray_check import check_ray

        run("ray", lambda: check_ray(context, probe))
    return report
