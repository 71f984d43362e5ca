"""The `scaffold` command line: parse, call one stage function, print. Nothing else lives here.

Heavy imports (torch, timm, libcst, copier, terratorch) happen inside the commands, so that
`scaffold --help` starts as fast as Typer itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from scaffold.errors import ScaffoldError

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

TargetArg = Annotated[
    str,
    typer.Argument(help="path/to/model.py, path/to/model.py:Name or package.module:Name."),
]
ArgOpt = Annotated[
    list[str] | None,
    typer.Option("--arg", help="Constructor argument NAME=VALUE (VALUE is YAML). Repeatable."),
]
ShapeOpt = Annotated[
    str | None,
    typer.Option("--input-shape", help="Input without batch: C,H,W or C,T,H,W (e.g. 6,4,64,64)."),
]
ForwardArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--forward-arg",
        help="Forward argument NAME=VALUE, or PARAM.KEY=VALUE for an item of a dict parameter "
        "(VALUE is YAML), e.g. wavelengths=[0.49,0.56,0.665]. Repeatable.",
    ),
]
ImageArgOpt = Annotated[
    str | None,
    typer.Option(
        "--image-arg",
        help="The forward parameter (or PARAM.KEY) that receives the image (default: the first).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
DirArg = Annotated[
    Path, typer.Argument(help="A directory made by `scaffold new-backbone`.", show_default=True)
]


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


@app.command()
def inspect(
    target: TargetArg,
    arg: ArgOpt = None,
    input_shape: ShapeOpt = None,
    forward_arg: ForwardArgOpt = None,
    image_arg: ImageArgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Analyse a model and show its feature maps. Writes nothing."""
    from scaffold.analysis import analyse
    from scaffold.analysis.call import check_image_arg, parse_forward_args
    from scaffold.target import parse_args, parse_input_shape

    args = parse_args(arg)
    shape = parse_input_shape(input_shape)
    forward_args = parse_forward_args(forward_arg)
    check_image_arg(image_arg)
    from scaffold.lightimport import parents_deferred

    # Nothing else is imported in this process: the model's module is imported alone.
    with _stdout_kept_for_json(as_json), err().status(f"analysing {target}"), parents_deferred():
        spec = analyse(target, args, shape, forward_args, image_arg)
    if as_json:
        _print_json(spec.to_dict())
        return
    from scaffold.report import spec_table

    out().print(spec_table(spec))


@app.command("new-backbone")
def new_backbone(
    target: TargetArg,
    name: Annotated[
        str | None, typer.Option(help="Registered backbone name (default: from the class name).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default: ./<name>).")
    ] = None,
    arg: ArgOpt = None,
    input_shape: ShapeOpt = None,
    weights: Annotated[
        Path | None, typer.Option(help="A checkpoint to load as the pretrained weights.")
    ] = None,
    task: Annotated[
        str, typer.Option(help="segmentation, classification or regression.")
    ] = "segmentation",
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Generate only.")] = False,
    forward_arg: ForwardArgOpt = None,
    image_arg: ImageArgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate the timm registration, FeatureInfo wrapper, factory and benchmark YAML, then verify."""
    from scaffold.analysis.call import check_image_arg, parse_forward_args
    from scaffold.generate import Options, generate
    from scaffold.target import parse_args, parse_input_shape

    options = Options(
        target=target,
        args=parse_args(arg),
        input_shape=parse_input_shape(input_shape),
        name=name,
        out=out_dir,
        weights=weights,
        task=task,
        forward_args=parse_forward_args(forward_arg),
        image_arg=check_image_arg(image_arg),
    )
    with _stdout_kept_for_json(as_json):
        result = generate(options, progress=err())
    _verify_and_emit(result, run=not no_verify, as_json=as_json, failed=False)


@app.command()
def verify(
    directory: DirArg = Path("."),
    quick: Annotated[bool, typer.Option("--quick", help="Skip the benchmark run.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a generated backbone, fast to slow, ending with a run of its benchmark YAML."""
    from scaffold.verify import verify_dir

    with _stdout_kept_for_json(as_json):
        report = verify_dir(directory, quick=quick, progress=err())
    if as_json:
        _print_json({"ok": report.ok, "checks": [c.to_dict() for c in report.checks]})
    else:
        from scaffold.report import checks_table

        out().print(checks_table(report))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
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
) -> None:
    """Re-analyse the model, regenerate, and merge with the hand edits in DIRECTORY.

    --forward-arg and --image-arg change the recorded ones (the others are kept)."""
    from scaffold.analysis.call import check_image_arg, parse_forward_args
    from scaffold.update import update_dir

    forward_args = parse_forward_args(forward_arg)
    check_image_arg(image_arg)
    with _stdout_kept_for_json(as_json):
        result = update_dir(
            directory,
            dry_run=dry_run,
            progress=err(),
            forward_args=forward_args,
            image_arg=image_arg,
        )
    if dry_run:
        if as_json:
            _print_json({**result.to_dict(), "verified": False, "diff": result.diff})
        else:
            sys.stdout.write(result.diff or "")
        return
    # A merge conflict leaves markers in the code: verifying it would only fail.
    _verify_and_emit(
        result,
        run=not no_verify and not result.conflicts,
        as_json=as_json,
        failed=bool(result.conflicts),
    )


def _verify_and_emit(result, run: bool, as_json: bool, failed: bool) -> None:
    """After new-backbone or update: the ladder (when `run`), then the result; exit 1 when
    verification or the command itself (`failed`) failed."""
    report = None
    if run:
        from scaffold.verify import verify_dir

        with _stdout_kept_for_json(as_json):
            report = verify_dir(result.out, quick=False, progress=err())
    if as_json:
        checks = {"checks": [c.to_dict() for c in report.checks]} if report else {}
        _print_json({**result.to_dict(), "verified": bool(report and report.ok), **checks})
    else:
        from scaffold.report import show_result

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


def main() -> None:
    try:
        app()
    except ScaffoldError as exc:
        from rich.text import Text

        err().print(Text.assemble(("error: ", "red"), str(exc)), soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        if _state["debug"]:
            raise
        from rich.text import Text

        message = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
        err().print(Text.assemble(("internal error: ", "red"), message), soft_wrap=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
