"""A generated folder is portable: importing its package changes nothing of the process, its
files name no absolute path of the folder, and a moved or shared copy verifies where it is."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from scaffold.pipeline.new_backbone import Options, generate
from scaffold.verify.ladder import verify_dir

from .conftest import MODELS, run_fresh, run_json
from .test_data_cli import stack_pool

# Imports the package in a fresh interpreter: the environment and sys.path, before and after.
IMPORT_CHECK = r"""
import importlib, json, os, sys
sys.path.insert(0, sys.argv[1])
# What the package imports first: their effects (TerraTorch's are many) are not its own.
import timm, terratorch, terratorch.models, terratorch.registry, torch
env, path = dict(os.environ), list(sys.path)
importlib.import_module(sys.argv[2])
changed = {k for k in env.keys() | os.environ.keys() if env.get(k) != os.environ.get(k)}
print(json.dumps({"env": sorted(changed), "path": sys.path == path}))
"""


def absolute_mentions(folder: Path, original: Path) -> list[str]:
    """The files under `folder` (state and the smoke data left out) that name `original`."""
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if (
            not path.is_file()
            or rel.parts[0] in (".scaffold", "data")
            or "__pycache__" in rel.parts
        ):
            continue
        if str(original) in path.read_text(encoding="utf-8", errors="replace"):
            found.append(str(rel))
    return found


def checks(report) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in report.checks}


def test_importing_the_package_changes_neither_the_environment_nor_sys_path(generated, tmp_path):
    result = generated["cnn"]
    done = run_fresh(
        [sys.executable, "-c", IMPORT_CHECK, str(result.out), result.backbone], cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"env": [], "path": True}


def test_no_file_names_the_folder_and_a_moved_and_a_shared_copy_verify(tmp_path):
    made = tmp_path / "made" / "net"
    result = generate(Options(str(MODELS / "cnn.py"), {}, name="portable_net", out=made))
    assert absolute_mentions(made, made) == []
    config = yaml.safe_load(result.benchmark_config.read_text())
    assert config["custom_modules_path"] == "portable_net"
    assert config["storage_uri"] == "runs/hpo"  # never ./runs: iterate reads that elsewhere

    moved = tmp_path / "elsewhere" / "net"
    moved.parent.mkdir()
    shutil.move(str(made), str(moved))
    report = verify_dir(moved, quick=True)
    assert report.ok, checks(report)
    assert checks(report)["folder"][1] == "benchmark.yaml runs portable_net; no conflict markers"
    # The smoke task reads data/ (relative): its files are checked, not passed over.
    assert checks(report)["data"][1].startswith("48 smoke files in test, train, val:")

    shared = tmp_path / "shared" / "net"
    shutil.copytree(moved, shared, symlinks=True)
    shutil.rmtree(moved)  # nothing of the first place is left to lean on
    report = verify_dir(shared, quick=True)
    assert report.ok, checks(report)


def test_a_data_folder_benchmark_names_its_split_files_relative_to_the_folder(tmp_path):
    stack_pool(tmp_path / "fields", channels=2, frames=6)
    out = tmp_path / "out"
    code, data = run_json(
        "new-backbone", str(MODELS / "temporal.py"), "--out", str(out),
        "--data", str(tmp_path / "fields"), "--no-verify",
    )  # fmt: skip
    assert code == 0, data
    args = yaml.safe_load((out / "benchmark.yaml").read_text())["tasks"][0]["datamodule"]
    args = args["init_args"]
    assert args["train_split"] == "splits/fields/train.txt"
    assert (out / args["train_split"]).is_file()
    # The person's dataset stays where it is: its own absolute path.
    assert Path(args["train_data_root"]).is_absolute()
    assert absolute_mentions(out, out) == []


def test_a_moved_folder_whose_ray_config_names_the_old_place_says_what_to_repoint(tmp_path):
    """The Ray route takes no relative path: its config names the folder, and the folder check
    names the file, the key and the command that re-points it."""
    from scaffold.pipeline.update import update_dir
    from scaffold.verify.folder import check_folder
    from scaffold.verify.types import CheckFailed
    from scaffold.write.state import read_state

    made = tmp_path / "made" / "net"
    generate(Options(str(MODELS / "cnn.py"), {}, name="portable_ray", out=made, ray=True))
    assert absolute_mentions(made, made) == ["benchmark_ray.yaml"]  # the one documented place
    moved = tmp_path / "moved"
    shutil.move(str(made), str(moved))
    with pytest.raises(CheckFailed) as info:
        check_folder(moved, read_state(moved), moved / "benchmark.yaml")
    key, rest = str(info.value).removeprefix("benchmark_ray.yaml: ").split(" ", 1)
    assert key in ("tmp_dir", "storage_uri", "ray_storage_path") or key.startswith("tasks[0].")
    assert rest.endswith(
        f" is in {made}, not in {moved}: this folder was moved or copied: run "
        f"`scaffold update {moved}`"
    )
    update_dir(moved)  # re-points it
    assert check_folder(moved, read_state(moved), moved / "benchmark.yaml") == (
        "benchmark.yaml runs portable_ray; no conflict markers"
    )
    assert absolute_mentions(moved, made) == []


def test_the_repeat_command_makes_the_store_absolute_and_the_file_keeps_it_relative(generated):
    """terratorch-iterate's repeats (run_repetitions) refuse a relative store ("output_path
    must be absolute"): benchmark.yaml keeps its store relative (the folder stays movable) and
    its repeat command runs them on a copy with the folder's store absolute, from the folder."""
    from scaffold.verify.shorten import overridden_problems

    text = generated["cnn"].benchmark_config.read_text()
    cfg = yaml.safe_load(text)
    assert cfg["storage_uri"] == "runs/hpo" and cfg["run_repetitions"] == 5
    assert overridden_problems(cfg) == []
    assert 'sed "s|^storage_uri: |storage_uri: $PWD/|" benchmark.yaml' in text
    assert "terratorch iterate --hpo --repeat --config runs/repeat.yaml" in text


def test_update_turns_the_absolute_paths_of_an_earlier_layout_relative(tmp_path):
    """A folder an earlier scaffold wrote (absolute paths), moved: verify names the file, the
    key and the update; the update makes the paths relative, keeping a hand edit."""
    from scaffold.pipeline.update import update_dir
    from scaffold.write.state import encode_base

    made = tmp_path / "made"
    generate(Options(str(MODELS / "cnn.py"), {}, name="portable_old", out=made))
    state_path = made / ".scaffold" / "state.json"
    state = json.loads(state_path.read_text())
    for rel in ("benchmark.yaml", "fit/smoke.yaml"):
        text = (made / rel).read_text()
        for value in ("portable_old", "data/", "runs/"):
            text = text.replace(f": {value}", f": {made}/{value}")
        (made / rel).write_text(text)  # as the earlier scaffold wrote it
        state["bases"][rel] = encode_base(text.encode())
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    config = made / "benchmark.yaml"
    config.write_text(config.read_text().replace("n_trials: 1", "n_trials: 3"))  # mine
    assert absolute_mentions(made, made) == ["benchmark.yaml", "fit/smoke.yaml"]

    moved = tmp_path / "moved"
    shutil.move(str(made), str(moved))
    report = verify_dir(moved, quick=True)
    ok, detail = checks(report)["folder"]
    assert not ok and detail == (
        f"benchmark.yaml: custom_modules_path {made}/portable_old is outside {moved}: this "
        f"folder was moved or copied: run `scaffold update {moved}`"
    )
    update_dir(moved)
    assert absolute_mentions(moved, made) == []
    config = yaml.safe_load((moved / "benchmark.yaml").read_text())
    assert config["custom_modules_path"] == "portable_old" and config["n_trials"] == 3
    report = verify_dir(moved, quick=True)
    assert report.ok, checks(report)
