"""A person's work is never lost or hidden: update, verify and --out under the ways people really
use a folder (tree-wide tools, copies and moves, files of their own, half-resolved merges, odd
output folders, wrong weight files)."""

import base64
import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import zlib
from io import StringIO
from pathlib import Path

import pytest
import torch

from scaffold.errors import ScaffoldError
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.pipeline.update import UpdateInterrupted, update_dir
from scaffold.verify.ladder import verify_dir
from scaffold.verify.types import Check, VerifyReport
from scaffold.write.state import encode_base, locked

from .conftest import MODELS, SCAFFOLD, copy_model, run_cli, run_json
from .test_update import add_stage, snapshot

BROKEN = "raise RuntimeError('the original package, not this folder')\n"


@pytest.fixture()
def project(tmp_path, request):
    """A CNN model file of its own (unique module name) and its generated backbone."""
    name = f"safe_{request.node.name.split('[')[0].removeprefix('test_')}"[:40]
    model = copy_model("cnn", tmp_path / "models", new_name=name)
    result = generate(Options(str(model), {}, name=f"{name}_bb", out=tmp_path / "out"))
    return model, result


def checks(report) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in report.checks}


def state_of(out: Path) -> dict:
    return json.loads((out / ".scaffold" / "state.json").read_text())


def without_lock(files: dict) -> dict:
    files.pop(".scaffold/lock", None)
    return files


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# -- 1. merge bases that tree-wide tools cannot edit ---------------------------------------------
def test_sed_and_ruff_format_over_the_folder_lose_no_edit(project):
    _model, result = project
    out = result.out
    # A replace-in-files over every Python and YAML file, hidden folders included, ...
    for path in [*out.rglob("*.py"), *out.rglob("*.yaml")]:
        text = path.read_text()
        path.write_text(text.replace("edit freely", "edit with care"))
    sedded = (result.package / "backbone.py").read_text()
    # ... then a formatter with the project's own line length.
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--isolated", "--line-length", "60", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    edited = {p: p.read_text() for p in [*result.package.glob("*.py"), result.benchmark_config]}
    assert all("edit with care" in text for text in edited.values())
    assert edited[result.package / "backbone.py"] != sedded  # reformatted

    formatted = {p.name: p.read_bytes() for p in (result.package / "_runtime").glob("*.py")}
    update = update_dir(out)  # the model did not change: every file is the person's now
    # ... but the runtime's copy, which update replaces: the formatted files are kept aside
    assert [c for c in update.changes if "/_runtime/" not in c[0]] == []
    from scaffold.render.backbone import runtime_sources

    runtime = sorted(n for n, c in runtime_sources().items() if c != formatted.get(n))
    assert runtime and sorted(k.file.rpartition("/")[2] for k in update.kept_aside) == runtime
    assert all(
        (out / k.kept_as).read_text().count("edit with care") == 0 for k in update.kept_aside
    )
    assert {p: p.read_text() for p in edited} == edited


def test_a_changed_base_is_refused_not_trusted(project):
    model, result = project
    out = result.out
    state_path = out / ".scaffold" / "state.json"
    state = json.loads(state_path.read_text())
    rel = f"{result.backbone}/factory.py"
    entry = state["bases"][rel]
    content = zlib.decompress(base64.b64decode(entry["zlib_base64"]))
    assert content == (result.package / "factory.py").read_bytes()  # the base is the render
    forged = content.replace(b"edit freely", b"edit with care")
    entry["zlib_base64"] = base64.b64encode(zlib.compress(forged)).decode()  # hash not updated
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    (result.package / "factory.py").write_bytes(forged)
    add_stage(model)
    before = without_lock(snapshot(out))
    with pytest.raises(ScaffoldError, match=f"the stored base of {rel} was changed"):
        update_dir(out)
    assert without_lock(snapshot(out)) == before


def test_an_older_state_with_pristine_files_still_updates_and_moves_into_state_json(project):
    model, result = project
    out = result.out
    state_path = out / ".scaffold" / "state.json"
    state = json.loads(state_path.read_text())
    for rel, entry in state.pop("bases").items():
        path = out / ".scaffold" / "pristine" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(zlib.decompress(base64.b64decode(entry["zlib_base64"])))
    del state["data_files"]
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    factory = result.package / "factory.py"
    factory.write_text(factory.read_text() + "# mine\n")
    add_stage(model)
    update = update_dir(out)
    assert dict(update.changes) == {f"{result.backbone}/backbone.py": "updated"}
    assert factory.read_text().endswith("# mine\n")
    assert not (out / ".scaffold" / "pristine").exists()
    new_state = state_of(out)
    assert new_state["bases"][f"{result.backbone}/backbone.py"] == encode_base(
        (result.package / "backbone.py").read_bytes()
    )
    assert len(new_state["data_files"]) == 48  # the smoke files, recognised by their names


# -- 2. data/: only what scaffold wrote ----------------------------------------------------------
def test_update_rewrites_only_its_own_data_files_and_says_so(project):
    import rasterio

    model, result = project
    out = result.out
    mine = out / "data" / "real" / "README.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my real dataset goes here\n")
    model.write_text(model.read_text().replace("in_chans: int = 4", "in_chans: int = 5"))

    dry = update_dir(out, dry_run=True)
    assert dry.data_rewritten is True
    assert dry.to_dict()["data_kept"] == [str(mine)]
    assert ("data/", "rewritten") in dry.changes
    with rasterio.open(out / "data" / "train" / "img" / "s0_img.tif") as image:
        assert image.count == 4  # the dry run wrote nothing

    done = update_dir(out)
    assert done.data_rewritten is True and done.data_kept == ["data/real/README.txt"]
    assert mine.read_text() == "my real dataset goes here\n"
    with rasterio.open(out / "data" / "train" / "img" / "s0_img.tif") as image:
        assert image.count == 5
    assert len(state_of(out)["data_files"]) == 48
    for folder in [out / "data", *(p for p in (out / "data").rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) & 0o055 == 0o055, folder  # not private
    assert not [p for p in out.iterdir() if p.name.startswith(".data")]


# -- 3. and 5. copied and moved folders, moved models --------------------------------------------
@pytest.mark.e2e
def test_verify_of_a_copied_folder_runs_the_copy_never_the_original(project, tmp_path):
    _model, result = project
    out = result.out
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)
    (result.package / "__init__.py").write_text(BROKEN)  # the original is broken now
    # Its YAML names the package, the data and the results relative to the folder: the copy
    # runs itself as it is, with nothing to re-point.
    report = verify_dir(copy)
    assert report.ok, checks(report)
    assert next(iter(checks(report))) == "folder" and "benchmark" in checks(report)
    package = sys.modules[result.backbone]
    assert Path(package.__file__).parent == copy / result.backbone
    # The run's results went into the copy, none into the original.
    assert report.log_dir is not None and report.log_dir.is_relative_to(copy)
    assert (report.log_dir / "hpo").is_dir()
    assert not (out / "runs").exists() and not (out / ".scaffold" / "runs").exists()


def test_a_moved_folder_and_a_moved_model(project, tmp_path):
    model, result = project
    moved = tmp_path / "moved"
    result.out.rename(moved)
    report = verify_dir(moved, quick=True)  # nothing names the old place: nothing to re-point
    assert report.ok, checks(report)

    elsewhere = tmp_path / "elsewhere" / model.name
    elsewhere.parent.mkdir()
    model.rename(elsewhere)
    done = run_cli("update", str(moved), "--no-verify")
    assert done.returncode == 2
    assert one_error_line(done.stderr) == (
        f"error: the model file {model} is gone; if it moved, run `scaffold update "
        f"{moved} --model NEW_PATH`"
    )
    code, data = run_json("update", str(moved), "--model", str(elsewhere), "--no-verify")
    assert code == 0, data
    assert state_of(moved)["options"]["target"] == f"{elsewhere}:SmallCNN"
    backbone = (moved / result.backbone / "backbone.py").read_text()
    # The model now lives beside the folder: its root is written relative to the package.
    assert 'MODEL_IMPORT_ROOT: str | None = "../../elsewhere"' in backbone
    assert f'"{model.parent}"' not in backbone
    report = verify_dir(moved, quick=True)
    assert report.ok, checks(report)


# -- 4. unresolved conflicts ---------------------------------------------------------------------
def test_conflict_markers_block_update_until_resolved_and_verify_names_them(project):
    model, result = project
    backbone = result.package / "backbone.py"
    backbone.write_text(
        backbone.read_text().replace(
            "OUT_INDICES: tuple[int, ...] = (0, 1, 2)", "OUT_INDICES: tuple[int, ...] = (1, 2)"
        )
    )
    add_stage(model)
    dry = run_cli("update", str(result.out), "--dry-run")
    assert dry.returncode == 1  # the real run would leave conflicts
    assert f"conflicts: {result.backbone}/backbone.py" in dry.stderr
    assert "files: 1 conflict" in dry.stderr

    first = update_dir(result.out)
    assert first.conflicts == [f"{result.backbone}/backbone.py"]
    with_markers = backbone.read_text()
    line = with_markers.splitlines().index("<<<<<<< yours (on disk)") + 1

    second = run_cli("update", str(result.out), "--no-verify")
    assert second.returncode == 1
    assert f"unresolved conflict in {result.backbone}/backbone.py" in second.stderr
    assert "run the benchmark with" not in second.stderr
    assert backbone.read_text() == with_markers

    report = verify_dir(result.out, quick=True)
    ok, detail = checks(report)["folder"]
    assert not ok
    assert detail.startswith(
        f"unresolved conflict markers in {result.backbone}/backbone.py (line {line}):"
    )

    resolved = with_markers.split("<<<<<<< yours (on disk)\n")
    head, rest = resolved[0], resolved[1]
    theirs = rest.split("=======\n")[1].split(">>>>>>> regenerated\n")
    backbone.write_text(head + theirs[0] + theirs[1])
    assert update_dir(result.out).conflicts == []
    assert verify_dir(result.out, quick=True).ok


# -- 6. --out edge cases -------------------------------------------------------------------------
def test_out_root_is_one_line_exit_2():
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", "/", "--no-verify")
    assert done.returncode == 2
    assert one_error_line(done.stderr) == (
        "error: --out /: not empty and not made by scaffold; choose an empty or new directory"
    )


def test_an_existing_empty_out_is_filled_in_place(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    out.chmod(0o750)
    before = out.stat()
    result = generate(Options(str(MODELS / "cnn.py"), {}, name="in_place_cnn", out=out))
    after = out.stat()
    assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (before.st_ino, 0o750)
    assert sorted(p.name for p in out.iterdir()) == [
        ".scaffold",
        "benchmark.yaml",
        "data",
        "fit",
        "in_place_cnn",
        "pyproject.toml",
    ]
    assert result.benchmark_config.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temp folder left


def test_a_long_out_name_does_not_overflow_the_temp_name(tmp_path):
    out = tmp_path / ("o" * 250)
    result = generate(Options(str(MODELS / "cnn.py"), {}, name="long_out_cnn", out=out))
    assert result.benchmark_config.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def _in_mount_namespace(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(
        ["unshare", "-m", "mount", "--bind", "-o", "ro", str(probe), str(probe)],
        capture_output=True,
    )
    probe.rmdir()
    return done.returncode == 0


def test_out_on_a_mount_point_and_a_read_only_output(tmp_path):
    if shutil.which("unshare") is None or not _in_mount_namespace(tmp_path):
        pytest.skip("needs a private mount namespace (unshare -m)")
    model = copy_model("cnn", tmp_path / "models", new_name="safe_mounted")
    out = tmp_path / "mnt"
    out.mkdir()
    script = f'mount --bind "{out}" "{out}" && exec "$@"'
    new = [
        SCAFFOLD,
        "new-backbone",
        str(model),
        "--name",
        "mounted_bb",
        "--out",
        str(out),
        "--no-verify",
    ]
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *new], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (out / "mounted_bb" / "backbone.py").is_file()

    add_stage(model)
    before = without_lock(snapshot(out))
    script = f'mount --bind -o ro "{out}" "{out}" && exec "$@"'
    update = [SCAFFOLD, "update", str(out), "--no-verify"]
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *update], capture_output=True, text=True
    )
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert line.startswith(f"error: {out}") and "cannot write there" in line
    assert without_lock(snapshot(out)) == before


# -- 7. --weights ---------------------------------------------------------------------------------
def test_bad_weights_are_refused_before_anything_is_written(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "a"), "--weights", str(text)
    )
    assert done.returncode == 2
    assert one_error_line(done.stderr).startswith(
        f"error: --weights {text}: not a checkpoint torch.load(weights_only=True) can read"
    )
    assert not (tmp_path / "a").exists()

    history = tmp_path / "history.pt"
    torch.save({"epoch": 3, "losses": [0.9, 0.5]}, history)
    with pytest.raises(
        ScaffoldError, match=r"holds a dict \(2 keys: epoch, losses\), not a state dict"
    ):
        generate(Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "b", weights=history))
    pickled = tmp_path / "plain.pkl"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ScaffoldError, match=r"not a checkpoint torch\.load"):
        generate(Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "c", weights=pickled))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.pt", "notes.txt", "plain.pkl"]


def test_a_failed_check_never_ends_with_run_the_benchmark(tmp_path):
    from rich.console import Console

    from scaffold.console import show_result
    from scaffold.pipeline.new_backbone import GenerateResult

    result = GenerateResult(
        "bb", tmp_path, tmp_path / "bb", tmp_path / "benchmark.yaml", (1, 4, 8, 8), ()
    )
    report = VerifyReport(tmp_path, [Check("folder", True, "ok"), Check("import", False, "boom")])
    out, err = StringIO(), StringIO()
    show_result(Console(file=out, width=200), Console(file=err, width=200), result, report)
    assert "run the benchmark with" not in err.getvalue()
    assert (
        f"verification failed (import): fix what the table says, then run `scaffold verify {tmp_path}`"
        in err.getvalue()
    )
    report.checks[1] = Check("import", True, "ok")
    err = StringIO()
    show_result(Console(file=out, width=200), Console(file=err, width=200), result, report)
    assert "run the benchmark with" in err.getvalue()


# -- Ctrl-C and the lock -------------------------------------------------------------------------
def test_ctrl_c_during_the_writes_finishes_them_and_says_what_was_done(project, monkeypatch):
    import scaffold.pipeline.update as update

    model, result = project
    add_stage(model)
    real_write = update.write_atomic
    calls = []

    def write_then_ctrl_c(path, content):
        if not calls:
            os.kill(os.getpid(), signal.SIGINT)  # held back until the writes are done
        calls.append(path)
        real_write(path, content)

    monkeypatch.setattr(update, "write_atomic", write_then_ctrl_c)
    with pytest.raises(UpdateInterrupted) as interrupted:
        update_dir(result.out)
    assert str(interrupted.value) == (
        f"the update's writes were finished first ({result.backbone}/backbone.py, "
        ".scaffold/state.json); not verified"
    )
    assert '"model.stage3"' in (result.package / "backbone.py").read_text()
    assert len(state_of(result.out)["spec"]["features"]) == 4


def test_verify_takes_the_lock(project):
    _model, result = project
    with locked(result.out), pytest.raises(ScaffoldError, match="another scaffold process"):
        verify_dir(result.out, quick=True)
