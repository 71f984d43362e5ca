"""The last rung: run the benchmark YAML exactly as ``terratorch iterate --hpo --config FILE``.

terratorch's ``iterate`` subcommand hands ``--hpo --config FILE`` to terratorch-iterate's
``main``; this calls that same function in this process (TerraTorch is imported already), with
stdout and stderr going to a log under ``DIR/.scaffold/runs/<timestamp>/``, on a shortened copy of
the YAML written there (`scaffold.verify.shorten`). The metric each task reached is read back from
MLflow under the copy's ``storage_uri``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from scaffold.errors import one_line
from scaffold.verify.shorten import overridden_problems, shortened_copy
from scaffold.verify.storage import folder_storage, storage_problem
from scaffold.verify.types import CheckFailed
from scaffold.write.names import FILE_STORE_ENV, output_folder

ROOT_CAUSE = re.compile(r"^(?:[\w.]+(?:Error|Exception)|error): .+")
PARSER_KEY = re.compile(r'^Parser key "([^"]+)":$')


def run_benchmark(config: Path, log_dir: Path) -> str:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "iterate.log"
    shutil.copyfile(config, log_dir / config.name)
    _check_overridden(config)
    config = shortened_copy(config, log_dir)
    started_ms = int(time.time() * 1000)
    argv = ["terratorch", "--hpo", "--config", str(config)]
    package = _forget_package(config)
    try:
        # iterate writes experiment_logs/ into the working directory: keep it with the log.
        with (
            _interrupts_passed_on(),
            _output_to(log),
            _argv(argv),
            _environ(*FILE_STORE_ENV),
            contextlib.chdir(log_dir),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message="Overwriting")
            from terratorch_iterate.main import main

            main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            cause = _root_cause(log) or f"exit code {exc.code}"
            raise CheckFailed(f"{cause} (log: {log})") from None
    except Exception as exc:
        raise CheckFailed(f"the run raised {one_line(exc)} (log: {log})") from exc
    if package is not None:
        _check_imported_from(package)
    return checked_results(config, started_ms, log)


def checked_results(config: Path, started_ms: int, log: Path) -> str:
    """The best metric of each task, when the run logged them and every loss and metric it
    logged on the way is finite (a NaN training loss can end in a finite accuracy)."""
    metrics = read_metrics(config, started_ms)
    if not metrics:
        cause = _root_cause(log)
        raise CheckFailed(f"no trial finished{': ' + cause if cause else ''} (log: {log})")
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise CheckFailed(f"metric not finite: {bad} (log: {log})")
    logged = not_finite(config, started_ms)
    if logged:
        shown = "; ".join(logged[:4]) + (" ..." if len(logged) > 4 else "")
        raise CheckFailed(f"the run logged values that are not finite: {shown} (log: {log})")
    return ", ".join(f"{k} = {v:.4g}" for k, v in metrics.items())


def _check_overridden(config: Path) -> None:
    """The values the shortened copy replaces are never run: the real file's are checked here."""
    try:
        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return  # the run itself reports the unreadable config
    problems = overridden_problems(cfg)
    if isinstance(cfg, dict):  # the real run's MLflow store and Optuna folder beside it
        storage = folder_storage(output_folder(config), cfg.get("storage_uri"))
        problems += [p for p in [storage_problem("storage_uri", storage or None)] if p]
    if problems:
        raise CheckFailed(
            f"{config.name}: {'; '.join(problems)}; the verifying run's shortened copy replaces "
            "this value, so only the real run would meet it"
        )


def _forget_package(config: Path) -> Path | None:
    """The config's ``custom_modules_path``, after dropping any import of a package by that name,
    so that the run imports the package the config names and never one imported earlier."""
    try:
        modules = yaml.safe_load(config.read_text(encoding="utf-8")).get("custom_modules_path")
    except (OSError, yaml.YAMLError, AttributeError):
        return None  # the run itself reports the unreadable config
    if not modules:
        return None
    package = Path(str(modules))
    for name in [m for m in sys.modules if m == package.name or m.startswith(package.name + ".")]:
        del sys.modules[name]
    return package


def _check_imported_from(package: Path) -> None:
    module = sys.modules.get(package.name)
    where = Path(getattr(module, "__file__", None) or "").resolve().parent
    if module is None or where != package.resolve():
        found = f"from {where}" if module is not None else "not at all"
        raise CheckFailed(f"the run imported '{package.name}' {found}, not from {package}")


def _runs(config: Path, started_ms: int) -> tuple[Any, str, list[Any]] | None:
    """(client, id of the newest top-level run, every run since `started_ms`) of the config's
    experiment in its MLflow store; None when there is none."""
    from mlflow.tracking import MlflowClient

    # The run's MLflow file store: reading it needs the opt-in that running it had.
    os.environ.setdefault(*FILE_STORE_ENV)
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    storage = folder_storage(output_folder(config), cfg["storage_uri"])
    client = MlflowClient(tracking_uri=storage)
    experiment = client.get_experiment_by_name(cfg["experiment_name"])
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.start_time >= {started_ms}",
        order_by=["attributes.start_time DESC"],
    )
    tops = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not tops:
        return None
    return client, tops[0].info.run_id, runs


def read_metrics(config: Path, started_ms: int) -> dict[str, float]:
    """``{"<task>: best_val/loss": value}`` from the newest top-level run of this experiment."""
    found = _runs(config, started_ms)
    if found is None:
        return {}
    _, top_id, runs = found
    metrics: dict[str, float] = {}
    for run in runs:
        if run.data.tags.get("mlflow.parentRunId") == top_id:
            name = run.data.tags.get("mlflow.runName", run.info.run_id)
            for key, value in run.data.metrics.items():
                if key.startswith("best_"):
                    metrics[f"{name}: {key}"] = value
    return metrics


def not_finite(config: Path, started_ms: int) -> list[str]:
    """Every value that is not finite in the history of every metric (losses included) of the
    newest top-level run and the runs below it (the tasks', their trials'), as
    ``"<run>: <metric> = nan at step N"``."""
    found = _runs(config, started_ms)
    if found is None:
        return []
    client, top_id, runs = found
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}

    def below_top(run_id: str | None) -> bool:
        seen: set[str] = set()
        while run_id is not None and run_id not in seen:
            if run_id == top_id:
                return True
            seen.add(run_id)
            run_id = parent.get(run_id)
        return False

    bad = []
    for run in runs:
        if not below_top(run.info.run_id):
            continue
        name = run.data.tags.get("mlflow.runName", run.info.run_id)
        for key in sorted(run.data.metrics):
            for point in client.get_metric_history(run.info.run_id, key):
                if not math.isfinite(point.value):
                    bad.append(f"{name}: {key} = {point.value} at step {point.step}")
                    break
    return bad


def _root_cause(log: Path) -> str | None:
    """The last 'SomethingError: message' (or argparse 'error: ...') line of the log."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    found = [i for i, line in enumerate(lines) if ROOT_CAUSE.match(line.strip())]
    if not found:
        return None
    cause = lines[found[-1]].strip()
    if cause.endswith(":"):  # jsonargparse: the key path and the reason on the lines below
        block = [cause.removeprefix("error: ")]
        for line in lines[found[-1] + 1 :]:
            if not line.startswith(" "):
                break
            block.append(line.strip())
        keys = [i for i, line in enumerate(block) if PARSER_KEY.match(line)]
        if keys and keys[-1] + 1 < len(block):
            path = " > ".join(m.group(1) for i in keys if (m := PARSER_KEY.match(block[i])))
            cause = f"error: Parser key {path}: {block[keys[-1] + 1]}"
    return cause[:300]


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", encoding="utf-8", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            # Python-level streams too, for when sys.stdout is not fd 1 (a test's capture).
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _interrupts_passed_on() -> Iterator[None]:
    """Ctrl-C (or SIGTERM) during the run stops verify, whatever the libraries do with it.

    Lightning's ``_call_and_handle_interrupt`` catches the KeyboardInterrupt, ignores SIGINT from
    then on, and exits 1 (the run then reads as a failed benchmark); code that catches every
    exception carries on. So each such signal is recorded as it passes (the handler in place
    still raises as before), and raised again once the run has returned, however it returned;
    the handlers of before, SIGINT's included, are put back first."""
    received: list[int] = []
    previous: dict[int, Any] = {}

    def recorded(signum: int, frame: Any) -> None:
        received.append(signum)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        raise KeyboardInterrupt

    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            # An ignored one stays ignored (None: a handler not set from Python, left alone).
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                previous[signum] = signal.signal(signum, recorded)
    except ValueError:  # not the main thread: signals are not handled here
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)  # raises as the signal itself would have
            raise KeyboardInterrupt


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """The environment variable `name` set to `value` for the run, as the printed command sets
    it, and as it was afterwards."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved
