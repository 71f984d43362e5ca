"""The `scaffold` command line: parse, call one stage function, print. Nothing else lives here.

Heavy imports (torch, timm, libcst, copier, terratorch), and each command's own stages, are
imported inside the commands, so that `scaffold --help` starts as fast as Typer itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperCommand

from scaffold.errors import ScaffoldError, check_utf8_path, not_utf8, printable

app = typer.Typer(
    name="scaffold",
    help="Turn a PyTorch nn.Module into a timm/TerraTorch backbone and a benchmark that runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich's help renderer alone would double the start-up time.
    rich_markup_mode=None,
)


@functools.cache
def _console(stderr: bool):
    from rich.console import Console

    return Console(stderr=stderr)


def err():
    """Progress, messages and errors: stderr."""
    return _console(True)


def out():
    """Results: stdout."""
    return _console(False)


_state = {"debug": False}


class _Command(TyperCommand):
    """Usage lines in the usual convention: a required argument bare (``TARGET``), an optional
    one in brackets (``[DIR]``); Typer's own marks a required one with braces."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [re.sub(r"^\{(.+)\}", r"\1", piece) for piece in pieces]


TargetArg = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="path/to/model.py, path/to/model.py:Name or package.module:Name.",
    ),
]
ArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--arg",
        metavar="NAME=VALUE",
        help="Constructor argument (VALUE is YAML; 1e-3 is a number). Repeatable.",
    ),
]
ShapeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        metavar="C,H,W",
        help="Input without batch: C,H,W or C,T,H,W (e.g. 6,4,64,64).",
    ),
]
ForwardArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--forward-arg",
        metavar="NAME=VALUE",
        help="Forward argument NAME=VALUE, or PARAM.KEY=VALUE for an item of a dict parameter "
        "(VALUE is YAML), e.g. wavelengths=[0.49,0.56,0.665]. Repeatable.",
    ),
]
ImageArgOpt = Annotated[
    str | None,
    typer.Option(
        "--image-arg",
        metavar="NAME",
        help="The forward parameter (or PARAM.KEY) that receives the image (default: the first).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
DataOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--data", metavar="DIR", help="A dataset folder: one benchmark task each. Repeatable."
    ),
]
GeobenchOpt = Annotated[
    Path | None,
    typer.Option(
        "--geobench",
        metavar="ROOT",
        help="A GEO-Bench v1 download: each dataset found under ROOT becomes a task on "
        "TerraTorch's datamodule for it.",
    ),
]
Geobench2Opt = Annotated[
    Path | None,
    typer.Option(
        "--geobench2",
        metavar="ROOT",
        help="A GEO-Bench-2 download: each dataset found under ROOT (by default the "
        "leaderboard's Core set) becomes a task on geobenchv2's datamodule for it.",
    ),
]
DatasetsOpt = Annotated[
    str | None,
    typer.Option(
        "--datasets",
        metavar="NAME,...",
        help="The GEO-Bench-2 datasets to run, by their names under ROOT (default: the Core "
        "set that --geobench2 ROOT holds).",
    ),
]
PartitionOpt = Annotated[
    str | None,
    typer.Option(
        "--partition",
        metavar="NAME",
        help="The GEO-Bench partition (default, 0.10x_train, ...; default: default).",
    ),
]
BandsOpt = Annotated[
    str | None,
    typer.Option(
        "--bands",
        metavar="NAME,...",
        help="The model's input bands in order, by TerraTorch's names (BLUE,GREEN,RED,"
        "NIR_NARROW; Sentinel-2 ids such as B02 or B8A too). Each task reads those its data has. "
        "Per modality for a model with several inputs: 's2=B02,B03;s1=VV,VH'.",
    ),
]
TapsOpt = Annotated[
    str | None,
    typer.Option(
        "--taps",
        metavar="MODULE,...",
        help="The feature maps, as `scaffold inspect` prints them: MODULE (its output), "
        "MODULE[KEY] (an item of what it returns), 'input of MODULE', 'MODULE (call N)'; "
        "channels, reductions and layouts are measured.",
    ),
]
BaselineOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--baseline",
        metavar="NAME",
        help="A reference backbone TerraTorch builds by name (resnet18, "
        "terratorch_prithvi_eo_v2_300): the same benchmark, its own config. Repeatable.",
    ),
]
ProtocolOpt = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        metavar="TRACK,...",
        help="The evaluation tracks: full_ft (the whole model trains), frozen (the encoder "
        "frozen: each task again as <task>_frozen), or full_ft,frozen (default: full_ft; "
        "update: as recorded).",
        show_default=False,
    ),
]
SeedsOpt = Annotated[
    int | None,
    typer.Option(
        "--seeds",
        metavar="N",
        help="Repeats of each task's best configuration: run_repetitions in benchmark.yaml, "
        "seeds 0..N-1 in fit/seeds.sh (default: 5, what the GEO-Bench-2 leaderboard takes; "
        "update: as recorded).",
        show_default=False,
    ),
]
DirArg = Annotated[
    Path,
    typer.Argument(
        metavar="DIR", help="A directory made by `scaffold new-backbone`.", show_default=True
    ),
]
# The task types of the benchmark YAML (scaffold.render.TASKS, spelled out here so that the
# help does not import the renderer).
Task = Literal["segmentation", "classification", "regression"]


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of internal errors.")
    ] = False,
) -> None:
    _state["debug"] = debug


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


@app.command(cls=_Command)
def inspect(
    target: TargetArg,
    arg: ArgOpt = None,
    input_shape: ShapeOpt = None,
    forward_arg: ForwardArgOpt = None,
    image_arg: ImageArgOpt = None,
    as_json: JsonOpt = False,
    bands: BandsOpt = None,
    taps: TapsOpt = None,
) -> None:
    """Analyse a model and show its feature maps. Writes nothing.

    \b
    Example: scaffold inspect model.py:Net --arg in_chans=6
    Exit codes: 0 analysed, 2 bad input.
    """
    from scaffold.console import spec_table
    from scaffold.data.bands import band_line, parse_bands
    from scaffold.pipeline import analyse
    from scaffold.resolve.lightimport import parents_deferred
    from scaffold.resolve.target import (
        check_image_arg,
        parse_args,
        parse_forward_args,
        parse_input_shape,
        parse_taps,
    )

    args = parse_args(arg)
    shape = parse_input_shape(input_shape)
    forward_args = parse_forward_args(forward_arg)
    check_image_arg(image_arg)
    tap_list = parse_taps(taps)
    band_names: tuple[str, ...] = ()
    modalities: tuple[tuple[str, int], ...] = ()
    items = _band_list(bands) or ()
    if any("=" in item for item in items):  # per modality: named as the datasets name them
        from scaffold.pipeline.geobench2 import bands_by_modality, input_modalities

        band_names, band_modalities = bands_by_modality(items)
        modalities = input_modalities(band_names, band_modalities)
    elif bands is not None:
        band_names = parse_bands(bands)

    # Nothing else is imported in this process: the model's module is imported alone.
    with (
        _stdout_kept_for_json(as_json),
        _on_interrupt("nothing was written"),
        err().status(f"analysing {target}"),
        parents_deferred(),
    ):
        spec = analyse(target, args, shape, forward_args, image_arg, tap_list, modalities)
    if as_json:
        _print_json(spec.to_dict() | ({"bands": list(band_names)} if bands is not None else {}))
        return

    out().print(spec_table(spec))
    if band_names:
        out().print(band_line(band_names, spec.in_chans), markup=False, highlight=False)


@app.command("new-backbone", cls=_Command)
def new_backbone(
    target: TargetArg,
    name: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="Registered backbone name (default: from the class name)."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="Output directory (default: ./NAME)."),
    ] = None,
    arg: ArgOpt = None,
    input_shape: ShapeOpt = None,
    weights: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="A checkpoint to load as the pretrained weights."),
    ] = None,
    task: Annotated[Task, typer.Option(help="The benchmark's task type.")] = "segmentation",
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Generate only.")] = False,
    forward_arg: ForwardArgOpt = None,
    image_arg: ImageArgOpt = None,
    as_json: JsonOpt = False,
    data: DataOpt = None,
    ray: Annotated[
        bool, typer.Option("--ray", help="Also write benchmark_ray.yaml, for iterate's Ray route.")
    ] = False,
    baseline: BaselineOpt = None,
    geobench: GeobenchOpt = None,
    partition: PartitionOpt = None,
    bands: BandsOpt = None,
    iterate2: Annotated[
        bool,
        typer.Option(
            "--iterate2",
            help="Also write iterate2/: a trial script and an HPO YAML per task, for "
            "terratorch-iterate's `iterate` (locally, Slurm or LSF).",
        ),
    ] = False,
    taps: TapsOpt = None,
    protocol: ProtocolOpt = None,
    seeds: SeedsOpt = None,
    geobench2: Geobench2Opt = None,
    datasets: DatasetsOpt = None,
) -> None:
    """Generate the timm registration, FeatureInfo wrapper, factory and benchmark YAML, then verify.

    \b
    Example: scaffold new-backbone model.py:Net --arg in_chans=6 --out my_net
    Exit codes: 0 verified (or generated, --no-verify), 1 not verified, 2 bad input.
    """
    from scaffold.data.geobench2 import parse_datasets
    from scaffold.pipeline.new_backbone import Options, generate
    from scaffold.render.tracks import DEFAULT_SEEDS, check_seeds, parse_protocol
    from scaffold.resolve.target import (
        check_image_arg,
        parse_args,
        parse_forward_args,
        parse_input_shape,
        parse_taps,
    )

    options = Options(
        target=target,
        args=parse_args(arg),
        input_shape=parse_input_shape(input_shape),
        name=name,
        out=out_dir,
        weights=weights,
        task=task,
        data=tuple(str(d) for d in data or ()),
        ray=ray,
        iterate2=iterate2,
        baselines=tuple(dict.fromkeys(baseline or ())),
        forward_args=parse_forward_args(forward_arg),
        image_arg=check_image_arg(image_arg),
        geobench=str(geobench) if geobench else None,
        partition=partition or "default",
        bands=_band_list(bands) or (),
        taps=parse_taps(taps) or (),
        protocol=parse_protocol(protocol) or ("full_ft",),
        seeds=check_seeds(seeds) or DEFAULT_SEEDS,
        geobench2=str(geobench2) if geobench2 else None,
        geobench2_datasets=parse_datasets(datasets),
    )
    with _stdout_kept_for_json(as_json), _on_interrupt("nothing was written"):
        result = generate(options, progress=err())
    _verify_and_emit(result, run=not no_verify, as_json=as_json, failed=False)


@app.command(cls=_Command)
def verify(
    directory: DirArg = Path("."),
    quick: Annotated[bool, typer.Option("--quick", help="Skip the benchmark run.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a generated backbone, fast to slow, ending with a run of its benchmark YAML.

    \b
    Example: scaffold verify my_net --quick
    Exit codes: 0 all checks passed, 1 a check failed, 2 bad input.
    """
    from scaffold.console import print_checks
    from scaffold.verify.ladder import verify_dir

    with _stdout_kept_for_json(as_json), _on_interrupt("verification stopped; run it again"):
        report = verify_dir(directory, quick=quick, progress=err())
    if as_json:
        _print_json({"ok": report.ok, "checks": [c.to_dict() for c in report.checks]})
    else:
        print_checks(out(), report)
    if not report.ok:
        raise typer.Exit(1)


@app.command(cls=_Command)
def update(
    directory: DirArg = Path("."),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff, write nothing.")
    ] = False,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Do not verify afterwards.")
    ] = False,
    forward_arg: ForwardArgOpt = None,
    image_arg: ImageArgOpt = None,
    as_json: JsonOpt = False,
    data: DataOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            metavar="PATH[:Name]",
            help="Where the model lives now, when it moved: path/to/model.py[:Name].",
        ),
    ] = None,
    ray: Annotated[
        bool | None,
        typer.Option(
            "--ray/--no-ray",
            help="Start (or stop) writing benchmark_ray.yaml, for iterate's Ray route "
            "(default: as recorded).",
            show_default=False,
        ),
    ] = None,
    baseline: BaselineOpt = None,
    drop_data: Annotated[
        list[Path] | None,
        typer.Option(
            "--drop-data",
            metavar="DIR",
            help="A recorded dataset folder to remove (its task goes); with --data NEW in the "
            "same update, NEW takes its place (a moved dataset). Repeatable.",
        ),
    ] = None,
    geobench: GeobenchOpt = None,
    partition: PartitionOpt = None,
    bands: BandsOpt = None,
    iterate2: Annotated[
        bool | None,
        typer.Option(
            "--iterate2/--no-iterate2",
            help="Start (or stop) writing iterate2/, for terratorch-iterate's `iterate` "
            "(default: as recorded).",
            show_default=False,
        ),
    ] = None,
    taps: TapsOpt = None,
    protocol: ProtocolOpt = None,
    seeds: SeedsOpt = None,
    geobench2: Geobench2Opt = None,
    datasets: DatasetsOpt = None,
) -> None:
    """Re-analyse the model, regenerate, and merge with the hand edits in DIR.

    --forward-arg and --image-arg change the recorded ones (the others are kept).
    --data adds a dataset to the recorded ones; --drop-data OLD --data NEW re-points one.
    --taps replaces the recorded taps.

    \b
    Example: scaffold update my_net --dry-run
    Exit codes: 0 updated, 1 verification failed or a merge conflict, 2 bad input.
    """
    from scaffold.console import show_dry_run
    from scaffold.data.geobench2 import parse_datasets
    from scaffold.pipeline.update import update_dir
    from scaffold.render.tracks import check_seeds, parse_protocol
    from scaffold.resolve.target import check_image_arg, parse_forward_args, parse_taps

    forward_args = parse_forward_args(forward_arg)
    check_image_arg(image_arg)
    tap_list = parse_taps(taps)
    with _stdout_kept_for_json(as_json), _on_interrupt("nothing was written"):
        result = update_dir(
            directory,
            dry_run=dry_run,
            progress=err(),
            data=tuple(str(d) for d in data or ()),
            model=model,
            ray=ray,
            baselines=tuple(baseline or ()),
            forward_args=forward_args,
            image_arg=image_arg,
            drop_data=tuple(str(d) for d in drop_data or ()),
            geobench=str(geobench) if geobench else None,
            partition=partition,
            bands=_band_list(bands),
            iterate2=iterate2,
            taps=tap_list,
            protocol=parse_protocol(protocol),
            seeds=check_seeds(seeds),
            geobench2=str(geobench2) if geobench2 else None,
            geobench2_datasets=parse_datasets(datasets) if datasets is not None else None,
        )
    if dry_run:
        if as_json:
            _print_json({**result.to_dict(), "verified": False, "diff": result.diff})
        else:
            sys.stdout.write(result.diff or "")
            show_dry_run(err(), result)
        if result.conflicts:  # the real run would leave (or meets) conflict markers
            raise typer.Exit(1)
        return
    # A merge conflict leaves markers in the code: verifying it would only fail.
    _verify_and_emit(
        result,
        run=not no_verify and not result.conflicts,
        as_json=as_json,
        failed=bool(result.conflicts),
    )


@app.command()
def report(
    directory: DirArg = Path("."),
    as_json: JsonOpt = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE.png", help="Also draw the comparison into this PNG."),
    ] = None,
    fmt: Annotated[
        Literal["table", "markdown", "latex", "csv"],
        typer.Option(
            "--format",
            help="How stdout shows the results: a table, or a paper's table in markdown, LaTeX "
            "or CSV (per task and track: mean ± std over seeds (n); per track the normalised "
            "IQM with its 95% stratified-bootstrap interval).",
        ),
    ] = "table",
    leaderboard: Annotated[
        Path | None,
        typer.Option(
            "--leaderboard",
            metavar="DIR",
            help="Also write the GEO-Bench-2 leaderboard's submission, one per track, into "
            "DIR/full_ft and DIR/frozen (results_and_parameters.csv, additional_info.json), and "
            "check each by the leaderboard's rules.",
        ),
    ] = None,
) -> None:
    """Compare the backbone with its baselines: one table from the finished benchmark runs.

    \b
    Example: scaffold report my_net --format markdown --leaderboard submission
    Exit codes: 0 shown, 1 the leaderboard's rules refuse the written submission, 2 bad input.
    (0: missing runs are shown as missing, and with --leaderboard the submission is ready;
    1: each problem on a line of its own.)
    """
    from scaffold.console import results_table
    from scaffold.results.collect import collect, plot_results

    with (
        _stdout_kept_for_json(as_json),
        _on_interrupt("nothing was written"),
        err().status("reading the runs"),
    ):
        results = collect(directory)
        if plot is not None:
            plot_results(results, plot)
    if as_json:
        _print_json(results.to_dict() | ({"plot": str(plot.resolve())} if plot else {}))
        return

    if fmt == "table":
        out().print(results_table(results))
    else:
        from scaffold.results.paper import table_text

        sys.stdout.write(table_text(results, fmt))
    for line in results.notes:  # one line each, however long
        err().print(line, markup=False, highlight=False, soft_wrap=True)
    if plot is not None:
        err().print(f"plot: {plot.resolve()}", markup=False, highlight=False)
    if leaderboard is not None:
        _leaderboard(results, directory, leaderboard)


def _leaderboard(results, directory: Path, where: Path) -> None:
    """Write a submission per track into `where`/<track> (the leaderboard ranks the tracks apart
    and counts the rows of a backbone and dataset together), check each by the leaderboard's
    rules: "ready", or each problem on a line of its own and exit 1."""
    from scaffold.results.leaderboard import CSV_FILE, JSON_FILE, validate, write_submission
    from scaffold.results.paper import kept_info, submission

    if where.exists() and not where.is_dir():
        raise ScaffoldError(f"--leaderboard {where}: not a folder")
    rows, info, outside = submission(results, directory)
    if not rows:
        raise ScaffoldError(
            f"--leaderboard {where}: no repeated runs to submit; run the repeat command in "
            "benchmark.yaml or `bash fit/seeds.sh` first"
        )
    refused = False
    for track in dict.fromkeys(r["frozen_or_full_ft"] for r in rows):
        folder = where / track
        mine = [r for r in rows if r["frozen_or_full_ft"] == track]
        write_submission(folder, mine, kept_info(folder / JSON_FILE, info))
        said = f"{folder}: {len(mine)} rows in {CSV_FILE}"
        if outside:
            said += f" ({', '.join(outside)}: not the leaderboard's datasets, said in its JSON)"
        err().print(said, markup=False, highlight=False, soft_wrap=True)
        problems = validate(folder)
        for problem in problems:
            err().print(f"{folder}: {problem}", markup=False, highlight=False, soft_wrap=True)
        verdict = "not ready" if problems else "ready"
        err().print(
            f"{folder}: {verdict} for the leaderboard",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        refused = refused or bool(problems)
    if refused:
        raise typer.Exit(1)


def _band_list(text: str | None) -> tuple[str, ...] | None:
    """``--bands A,B,C`` as given: the names are checked once the data is read (the datasets'
    own band names are known then)."""
    if text is None:
        return None
    if "=" in text:  # per modality: s2=B02,B03;s1=VV,VH -> s2=B02, s2=B03, s1=VV, s1=VH
        items = []
        for group in filter(None, (g.strip() for g in text.split(";"))):
            mod, sep, bands = group.partition("=")
            if not sep or not mod.strip() or not bands.strip(",; "):
                raise ScaffoldError(
                    f"--bands: {group!r}: name each modality and its bands "
                    "(--bands 's2=B02,B03;s1=VV,VH')"
                )
            items += [f"{mod.strip()}={b.strip()}" for b in bands.split(",") if b.strip()]
        if items:
            return tuple(items)
    names = tuple(b.strip() for b in text.split(",") if b.strip())
    if not names:
        raise ScaffoldError("--bands: no band names given (e.g. --bands BLUE,GREEN,RED)")
    return names


def _verify_and_emit(result, run: bool, as_json: bool, failed: bool) -> None:
    """After new-backbone or update: the ladder (when `run`), then the result; exit 1 when
    verification or the command itself (`failed`) failed."""
    from scaffold.console import show_result
    from scaffold.verify.ladder import verify_dir

    report = None
    if run:
        said = f"{result.out} is written; verification stopped: run `scaffold verify {result.out}`"
        with _stdout_kept_for_json(as_json), _on_interrupt(said):
            report = verify_dir(result.out, quick=False, progress=err())
    if as_json:
        checks = {"checks": [c.to_dict() for c in report.checks]} if report else {}
        _print_json({**result.to_dict(), "verified": bool(report and report.ok), **checks})
    else:
        show_result(out(), err(), result, report)
    if failed or (report is not None and not report.ok):
        raise typer.Exit(1)


@contextlib.contextmanager
def _stdout_kept_for_json(as_json: bool) -> Iterator[None]:
    """With --json, stdout holds the JSON object only: whatever the person's model (or a library)
    prints meanwhile goes to stderr, file descriptor 1 included."""
    if not as_json:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _on_interrupt(said: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM: one line saying what was completed (the exception's own message when
    it has one, else `said`: a bare Ctrl-C has none), exit 130."""
    try:
        yield
    except KeyboardInterrupt as exc:
        err().print(f"interrupted: {str(exc) or said}", markup=False, highlight=False)
        raise typer.Exit(130) from None


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _check_argv(argv: list[str]) -> None:
    """An argument with a byte that is not UTF-8 (a path's) is refused, naming its option."""
    for i, arg in enumerate(argv):
        if not_utf8(arg) is not None:
            before = argv[i - 1] if i else ""
            check_utf8_path(before if before.startswith("-") else "argument", arg)


def main() -> None:
    # SIGTERM (kill, a scheduler's time limit) stops scaffold as Ctrl-C does: the same cleanup
    # (the processes it started end, an update's writes finish), the same line, exit 130.
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread (scaffold called from a thread of a program)
        previous = None
    try:
        _main_guarded()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_guarded() -> None:
    try:
        _check_argv(sys.argv[1:])
        app()
    except ScaffoldError as exc:
        from rich.text import Text

        err().print(Text.assemble(("error: ", "red"), printable(str(exc))), soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        if _state["debug"]:
            raise
        from rich.text import Text

        message = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
        message = printable(message)
        err().print(Text.assemble(("internal error: ", "red"), message), soft_wrap=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
