"""Interrupts: Ctrl-C, SIGTERM and kill -9 at the worst moments. Whatever stops scaffold, the
line it prints says where things stand, no process it started outlives it, and the next run
finds the folder whole: an update killed half way is rolled back, never merged as a hand edit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from scaffold.errors import ScaffoldError
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.pipeline.update import update_dir
from scaffold.verify.checks import Context
from scaffold.verify.ladder import verify_dir
from scaffold.verify.smoke_data import check_smoke_data
from scaffold.verify.types import CheckFailed
from scaffold.write.state import read_state

from .conftest import MODELS, SCAFFOLD, clean_env, copy_model, run_cli


@pytest.fixture()
def killable(tmp_path, request):
    """A CNN model file of its own (4 input bands) and its generated backbone, whose package
    name sorts after fit/ (so an update writes benchmark.yaml and fit/ before the package)."""
    name = f"killed_{request.node.name.split('[')[0].removeprefix('test_')}"[:40]
    model = copy_model("cnn", tmp_path / "models", new_name=name)
    result = generate(Options(str(model), {}, name=f"{name}_bb", out=tmp_path / "out"))
    return model, result


def set_bands(model: Path, bands: int) -> None:
    text = model.read_text()
    for old in range(1, 10):
        text = text.replace(f"in_chans: int = {old}", f"in_chans: int = {bands}")
    model.write_text(text)


def update_killed_at(out: Path, wrap: str) -> str:
    """`scaffold update OUT` in a fresh process, killed with SIGKILL at the point `wrap` picks:
    Python that replaces a function the update calls with one that prints a line and sleeps
    once that point is reached (test code: the product has no hook for it). What the process
    leaves is what a kill -9 there leaves. Returns the line."""
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "import scaffold.pipeline.update as update\n"
        f"OUT = Path({str(out)!r})\n"
        "def stop(what):\n"
        "    print(what, flush=True)\n"
        "    time.sleep(600)\n"
        f"{wrap}\n"
        "update.update_dir(OUT)\n"
        "print('not killed', flush=True)\n"
    )
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = process.stdout.readline().strip()
    finally:
        process.kill()
        process.wait()
    return line


def bands_of(out: Path) -> dict[str, set[int]]:
    """The band counts of the smoke images, per split."""
    import rasterio

    found: dict[str, set[int]] = {}
    for path in sorted((out / "data").rglob("*_img.tif")):
        with rasterio.open(path) as image:
            found.setdefault(path.relative_to(out / "data").parts[0], set()).add(image.count)
    return found


def ctrl_c(*args, **kwargs):
    """A stage that Ctrl-C stops as soon as it starts (a real SIGINT to this process)."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # the interrupt arrives before this ends
    raise AssertionError("SIGINT did not interrupt")


# -- 3. the line says where things stand ---------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "stage", "said"),
    [
        (["inspect", str(MODELS / "cnn.py")], "scaffold.pipeline.analyse", "nothing was written"),
        (
            ["new-backbone", str(MODELS / "cnn.py"), "--no-verify"],
            "scaffold.pipeline.new_backbone.generate",
            "nothing was written",
        ),
        (["update", "{out}", "--no-verify"], "scaffold.pipeline.update.update_dir", "nothing was"),
        (["verify", "{out}"], "scaffold.verify.ladder.verify_dir", "verification stopped"),
        (["report", "{out}"], "scaffold.results.collect.collect", "nothing was written"),
    ],
)
def test_ctrl_c_in_every_command_says_where_things_stand(
    monkeypatch, tmp_path, command, stage, said
):
    module, _, name = stage.rpartition(".")
    monkeypatch.setattr(f"{module}.{name}", ctrl_c)
    args = [a.replace("{out}", str(tmp_path)) for a in command]  # the stage never reads it
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 130, (done.stdout, done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: {said}"), done.stderr
    assert "Aborted" not in done.stderr and "Traceback" not in done.stderr


# -- 1. kill -9 while the smoke data is rewritten ------------------------------------------------
def test_a_kill_during_the_data_rewrite_is_rolled_back_and_verify_checks_the_data(killable):
    import numpy as np
    import rasterio

    model, result = killable
    out = result.out
    assert bands_of(out) == {"train": {4}, "val": {4}, "test": {4}}
    set_bands(model, 5)
    line = update_killed_at(
        out,
        "real = os.replace\n"
        "moved = []\n"
        "def replace(src, dst, *args, **kwargs):\n"
        "    real(src, dst, *args, **kwargs)\n"
        "    if Path(dst).is_relative_to(OUT / 'data'):\n"
        "        moved.append(dst)\n"
        "        if len(moved) == 10:\n"
        "            stop(f'killed after {dst}')\n"
        "os.replace = replace",
    )
    assert line.startswith("killed after"), line
    set_bands(model, 4)  # the person goes back to the old model

    console = Console(record=True, width=300)
    report = verify_dir(out, quick=True, progress=console)  # finds the half-done update first
    assert "rolled back an interrupted update" in console.export_text()
    assert report.ok, [(c.name, c.detail) for c in report.checks if not c.ok]
    assert "data" in [c.name for c in report.checks]
    assert bands_of(out) == {"train": {4}, "val": {4}, "test": {4}}
    assert update_dir(out).changes == []
    assert not [p.name for p in out.iterdir() if p.name.startswith(".data")]
    assert not (out / ".scaffold" / "journal.json").exists()

    # Data that does not match the YAML (a file copied in by hand): a finding naming it.
    wrong = out / "data" / "val" / "img" / "s3_img.tif"
    with rasterio.open(wrong) as image:
        profile = image.profile | {"count": 5}
    with rasterio.open(wrong, "w", **profile) as image:
        image.write(np.zeros((5, profile["height"], profile["width"]), np.float32))
    with pytest.raises(CheckFailed) as finding:
        check_smoke_data(Context.load(out, read_state(out)))
    assert str(finding.value) == (
        f"split val: {wrong} has 5 bands; the smoke task's backbone_in_chans is 4"
    )


# -- 2. kill -9 right after a file was replaced --------------------------------------------------
def test_a_kill_after_a_replace_is_rolled_back_not_merged_and_later_edits_are_kept(killable):
    model, result = killable
    out = result.out
    before = {rel: (out / rel).read_bytes() for rel in ("benchmark.yaml", "fit/smoke.yaml")}
    backbone = result.package / "backbone.py"
    before["backbone.py"] = backbone.read_bytes()
    set_bands(model, 5)
    wrap = (
        "real = update.write_atomic\n"
        "def write_atomic(path, content):\n"
        "    real(path, content)\n"
        "    if path.name == 'backbone.py':\n"
        "        stop(f'killed after {path}')\n"
        "update.write_atomic = write_atomic"
    )
    assert update_killed_at(out, wrap) == f"killed after {backbone}"
    assert backbone.read_bytes() != before["backbone.py"]  # replaced; the state is still old
    # After the kill the person edits a file the killed run wrote, and reverts the model.
    fit = out / "fit" / "smoke.yaml"
    edited = fit.read_text() + "# checked by hand\n"
    fit.write_text(edited)
    set_bands(model, 4)

    console = Console(record=True, width=300)
    done = update_dir(out, progress=console)
    text = console.export_text()
    assert "rolled back an interrupted update" in text
    assert f"kept {fit.relative_to(out)}: changed after the interrupted update" in text
    assert backbone.read_bytes() == before["backbone.py"]  # restored, not merged
    assert (out / "benchmark.yaml").read_bytes() == before["benchmark.yaml"]
    assert fit.read_text() == edited  # the person's edit is never lost
    assert done.conflicts == [] and done.changes == []
    assert bands_of(out) == {"train": {4}, "val": {4}, "test": {4}}
    assert not (out / ".scaffold" / "journal.json").exists()


def scaffold_started(*args: str) -> subprocess.Popen:
    """`scaffold ARGS` in a fresh process, its stderr read line by line."""
    env = clean_env() | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [SCAFFOLD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def line_starting(process: subprocess.Popen, prefix: str, seen: list[str]) -> str:
    for line in process.stderr:
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r}: {''.join(seen)}")


def waited(process: subprocess.Popen, seen: list[str]) -> tuple[str, str]:
    out, err = process.communicate(timeout=300)
    return out, "".join(seen) + err


# -- 4. Ctrl-C during the in-process benchmark run -----------------------------------------------
@pytest.mark.e2e
def test_ctrl_c_while_lightning_trains_stops_verify_with_130(killable):
    _, result = killable
    process = scaffold_started("verify", str(result.out))
    seen: list[str] = []
    line = line_starting(process, "running the benchmark YAML (log in ", seen)
    log = (
        Path(line.strip().removeprefix("running the benchmark YAML (log in ")[:-1]) / "iterate.log"
    )
    deadline = time.monotonic() + 300
    while "Trainable params" not in (log.read_text() if log.is_file() else ""):
        assert time.monotonic() < deadline and process.poll() is None, "".join(seen)
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # Lightning is training: it catches KeyboardInterrupt
    out, err = waited(process, seen)
    # Mostly it lands in Lightning's fit, which catches it and carries on; on a busy machine the
    # two batches can be done first, and the run then ends by itself. Either way verify stops.
    text = log.read_text()
    assert "Detected KeyboardInterrupt" in text or "HPO complete" in text
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: verification stopped; run it again"
    assert out == ""  # no table: the checks after the benchmark never ran


# -- 5. SIGTERM while iterate2's trial runs ------------------------------------------------------
@pytest.mark.e2e
def test_sigterm_during_the_iterate2_check_leaves_no_process_behind(tmp_path):
    import psutil

    model = copy_model("cnn", tmp_path / "models", new_name="term_iterate2")
    result = generate(
        Options(str(model), {}, name="term_iterate2_bb", out=tmp_path / "out", iterate2=True)
    )
    process = scaffold_started("verify", str(result.out))
    me = psutil.Process(process.pid)
    deadline = time.monotonic() + 500
    while True:  # until iterate has started a trial
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        children = me.children(recursive=True)
        with contextlib.suppress(psutil.Error):
            if any("trial.py" in " ".join(c.cmdline()) for c in children):
                break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    try:
        _out, err = waited(process, [])
        time.sleep(1)  # an orphan would still be running now
        alive = []
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(" ".join(child.cmdline()))
    finally:
        for child in children:  # never left to the next test
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    assert alive == []
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: verification stopped; run it again"


def test_a_write_that_fails_half_way_is_undone_at_once(killable, monkeypatch):
    import errno

    import scaffold.pipeline.update as update

    def files(out: Path) -> dict[str, bytes]:
        found = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        found.pop(".scaffold/lock", None)
        return found

    model, result = killable
    before = files(result.out)
    set_bands(model, 5)  # the data, benchmark.yaml, fit/ and the package change
    real = update.write_atomic

    def full_disk(path, content):
        if path.name == "backbone.py":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, content)

    monkeypatch.setattr(update, "write_atomic", full_disk)
    with pytest.raises(ScaffoldError) as refused:
        update_dir(result.out)
    assert str(refused.value) == (
        f"{result.out}: cannot write there (No space left on device); what was written is undone"
    )
    assert files(result.out) == before  # data/ and benchmark.yaml included, no journal
    assert bands_of(result.out) == {"train": {4}, "val": {4}, "test": {4}}


def test_a_dry_run_over_an_interrupted_update_changes_nothing_and_says_what_to_run(killable):
    from scaffold.write import journal

    _, result = killable
    out = result.out
    yaml_file = out / "benchmark.yaml"
    old = yaml_file.read_bytes()
    journal.begin(out, {"benchmark.yaml": (old, old + b"# new\n")}, None)
    yaml_file.write_bytes(old + b"# new\n")  # what the interrupted update wrote
    done = run_cli("update", str(out), "--dry-run")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {out}: an earlier update was interrupted while writing "
        f"({out}/.scaffold/journal.json is its journal); run `scaffold update {out}` (or "
        "verify) to roll it back first: a dry run changes nothing"
    )
    assert yaml_file.read_bytes() == old + b"# new\n"
    update_dir(out)  # the real run rolls it back
    assert yaml_file.read_bytes() == old and not journal.journal_path(out).exists()
