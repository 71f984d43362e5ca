"""The evaluation tracks and seeds: `--protocol full_ft,frozen` writes each task again as
``<task>_frozen`` with TerraTorch's ``freeze_backbone``, the derived files follow, `--seeds N`
sets ``run_repetitions`` and the seeds of fit/seeds.sh; the ``tracks`` check trains one real step
and sees a frozen encoder unchanged and a fine-tuned one changed."""

from __future__ import annotations

import json
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
    edited = tmp_path / "smoke_frozen.yaml"
    edited.write_text(yaml.safe_dump(config))
    with pytest.raises(CheckFailed, match="frozen track's encoder changed"):
        check_track(edited, "frozen")


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
