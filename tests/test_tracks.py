"""The evaluation tracks and seeds: `--protocol full_ft,frozen` writes each task again as
``<task>_frozen`` with TerraTorch's ``freeze_backbone``, the derived files follow, `--seeds N`
sets ``run_repetitions`` and the seeds of fit/seeds.sh; the ``tracks`` check trains one real step
and sees a frozen encoder unchanged and a fine-tuned one changed."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import pytest
import yaml

from scaffold.render.tracks import parse_protocol, track_of
from scaffold.verify.tracks import check_track
from scaffold.verify.types import CheckFailed
from tests.conftest import MODELS, run_cli, run_json


@pytest.fixture(scope="module")
def two_tracks(tmp_path_factory):
    out = tmp_path_factory.mktemp("tracks") / "net"
    done = run_cli(
        "new-backbone",
        str(MODELS / "cnn.py"),
        "--out",
        str(out),
        "--protocol",
        "frozen,full_ft",
        "--seeds",
        "2",
        "--no-verify",
    )
    assert done.returncode == 0, done.stderr
    return out


def test_both_tracks_are_written_and_recorded(two_tracks):
    config = yaml.safe_load((two_tracks / "benchmark.yaml").read_text())
    tasks = {t["name"]: t for t in config["tasks"]}
    assert list(tasks) == ["smoke", "smoke_frozen"]
    assert tasks["smoke_frozen"]["terratorch_task"]["freeze_backbone"] is True
    assert "freeze_backbone" not in tasks["smoke"]["terratorch_task"]
    # the same task otherwise: data, decoder, metric
    same = {k: v for k, v in tasks["smoke_frozen"].items() if k not in ("name", "terratorch_task")}
    assert same == {k: v for k, v in tasks["smoke"].items() if k not in ("name", "terratorch_task")}
    assert config["run_repetitions"] == 2
    fit = yaml.safe_load((two_tracks / "fit" / "smoke_frozen.yaml").read_text())
    assert fit["model"]["init_args"]["freeze_backbone"] is True
    options = json.loads((two_tracks / ".scaffold" / "state.json").read_text())["options"]
    assert options["protocol"] == ["full_ft", "frozen"] and options["seeds"] == 2


def test_tracks_check_trains_one_step(two_tracks):
    frozen = check_track(two_tracks / "fit" / "smoke_frozen.yaml", "frozen")
    found = re.match(
        r"frozen: all (\d+) encoder tensors unchanged .*, (\d+) others changed", frozen
    )
    assert found and int(found[1]) > 0 and int(found[2]) > 0, frozen
    # TerraTorch's freeze leaves BatchNorm's running statistics moving: said, not hidden
    assert "buffers of it, running statistics, moved" in frozen
    full = check_track(two_tracks / "fit" / "smoke.yaml", "full_ft")
    found = re.match(r"full_ft: (\d+) of (\d+) encoder tensors changed", full)
    assert found and 0 < int(found[1]) <= int(found[2]), full


def test_a_frozen_task_that_is_not_frozen_fails(two_tracks, tmp_path):
    """freeze_backbone taken out by hand: the frozen track's encoder learns, and the check says so."""
    config = yaml.safe_load((two_tracks / "fit" / "smoke_frozen.yaml").read_text())
    del config["model"]["init_args"]["freeze_backbone"]
    edited = (
        two_tracks / "fit" / "smoke_frozen_edited.yaml"
    )  # in the folder: its paths are relative
    edited.write_text(yaml.safe_dump(config))
    try:
        with pytest.raises(CheckFailed, match="frozen track's encoder changed"):
            check_track(edited, "frozen")
    finally:
        edited.unlink()  # the fixture's folder is shared with the other tests


@pytest.mark.parametrize("bad", ["", "frozen,fine", "all"])
def test_bad_protocol_is_refused(bad, tmp_path):
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "x"), "--protocol", bad
    )
    assert done.returncode == 2
    assert "--protocol" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


def test_names():
    assert parse_protocol("frozen, full_ft") == ("full_ft", "frozen")
    assert track_of("eurosat_frozen") == ("eurosat", "frozen")
    assert track_of("eurosat") == ("eurosat", "full_ft")
    assert track_of("_frozen") == ("_frozen", "full_ft")


def test_seeds_script_lists_the_tasks_and_fixed_seeds(two_tracks):
    script = (two_tracks / "fit" / "seeds.sh").read_text()
    assert "TASKS=(smoke smoke_frozen)\nSEEDS=2\n" in script
    assert "sbatch --array=0-3 fit/seeds.sh" in script
    assert '--seed_everything "$seed"' in script


def test_quick_verify_runs_the_tracks_check(two_tracks):
    code, report = run_json("verify", str(two_tracks), "--quick")
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 0, report
    assert checks["fit configs"]["ok"] and "seeds.sh" not in checks["fit configs"]["detail"]
    assert checks["tracks"]["ok"] and "frozen: all" in checks["tracks"]["detail"]


# Last: it changes the module's folder.
def test_update_changes_the_tracks(two_tracks):
    done = run_cli("update", str(two_tracks), "--protocol", "full_ft", "--no-verify")
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((two_tracks / "benchmark.yaml").read_text())
    assert [t["name"] for t in config["tasks"]] == ["smoke"]
    assert config["run_repetitions"] == 2  # the seeds as recorded
    assert not (two_tracks / "fit" / "smoke_frozen.yaml").exists()


def _terratorch(*args: str, run: bool = True):
    """TerraTorch's own CLI (`terratorch ARGS`) in this process."""
    import contextlib
    import sys

    from terratorch.cli_tools import build_lightning_cli

    saved = sys.argv
    sys.argv = saved[:1]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return build_lightning_cli(args=list(args), run=run)
    finally:
        sys.argv = saved


@pytest.mark.e2e
@pytest.mark.parametrize("data", [False, True], ids=["smoke", "data"])
def test_two_seeds_in_both_tracks_train_and_report(data, tmp_path, monkeypatch):
    """fit/seeds.sh's runs (its fit and test command lines, in this process): 2 seeds of one
    task on each track, the smoke task or a ``--data`` classification of 5-band GeoTIFFs. The
    frozen run's checkpoint holds the encoder as the seed built it; the full_ft run's does not.
    The report reads the four runs by task, track and seed."""
    import torch

    from scaffold.verify.fit import _import_custom_modules
    from tests.test_data_cli import class_folders

    name, extra = "smoke", []
    if data:
        name = "scenes"
        class_folders(tmp_path / name)
        extra = ["--data", str(tmp_path / name)]
    out = tmp_path / "net"
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(out), *extra,
        "--protocol", "full_ft,frozen", "--seeds", "2", "--no-verify",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((out / "fit" / f"{name}.yaml").read_text())
    monkeypatch.chdir(out)  # as fit/seeds.sh runs: from the folder its paths are relative to
    _import_custom_modules(out / "fit" / f"{name}.yaml", config["custom_modules_path"])
    changed = {}
    for task in (name, f"{name}_frozen"):
        for seed in ("0", "1"):
            where = str(out / "runs" / "fit" / task / f"seed_{seed}")
            cfg = str(out / "fit" / f"{task}.yaml")
            fit = _terratorch("fit", "--config", cfg, "--seed_everything", seed,
                              "--trainer.default_root_dir", where)  # fmt: skip
            ckpt = fit.trainer.checkpoint_callback.best_model_path
            _terratorch(
                "test", "--config", cfg, "--seed_everything", seed, "--ckpt_path", ckpt,
                "--trainer.default_root_dir", where,
                "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                "--trainer.logger.init_args.save_dir", where,
                "--trainer.logger.init_args.name", "",
                "--trainer.logger.init_args.version", "test",
            )  # fmt: skip
            # the encoder as this seed built it, against the one training left
            start = _terratorch("--config", cfg, "--seed_everything", seed, run=False)
            trained = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
            encoder = {
                k: v for k, v in start.model.state_dict().items() if k.startswith("model.encoder.")
            }
            params = {n for n, _ in start.model.named_parameters()}
            changed[task, seed] = sum(
                not torch.equal(v, trained[k]) for k, v in encoder.items() if k in params
            )
    assert changed[f"{name}_frozen", "0"] == changed[f"{name}_frozen", "1"] == 0
    assert changed[name, "0"] > 0 and changed[name, "1"] > 0
    report = run_cli("report", str(out), "--format", "csv")
    rows = {(r["task"], r["track"]): r for r in csv.DictReader(io.StringIO(report.stdout))}
    for key in ((name, "full_ft"), (name, "frozen")):
        assert (rows[key]["n"], rows[key]["seeds"]) == ("2", "0 1"), report.stdout
        assert math.isfinite(float(rows[key]["mean"]))
