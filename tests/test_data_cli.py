"""`--data` end to end: new-backbone verifies real tasks, the YAML runs with the plain command,
bad data is one line and exit 2 with nothing written, update adds a task and keeps hand edits."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from scaffold.errors import ScaffoldError
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.verify.benchmark import read_metrics

from .conftest import BIN, MODELS, clean_env, run_cli, run_json
from .datasets import image, write_tif
from .test_data import region_folders, split_folders


def class_folders(root: Path, bands: int = 5) -> None:
    rng = np.random.default_rng(4)
    for split, n in (("train", 4), ("val", 2)):
        for klass in ("crop", "water"):
            for i in range(n):
                write_tif(root / split / klass / f"{klass}{i}.tif", image(rng, bands=bands))


def stack_pool(root: Path, channels: int, frames: int, n: int = 10) -> None:
    """A multitemporal stack (frames x channels bands) with float targets and no split."""
    rng = np.random.default_rng(5)
    for i in range(n):
        img = image(rng, bands=channels * frames, dtype=np.float32)
        write_tif(root / "inputs" / f"field{i}.tif", img)
        write_tif(root / "targets" / f"field{i}.tif", (img[0] / 100).astype(np.float32))


@pytest.mark.e2e
def test_new_backbone_with_two_datasets_verifies_each_task(tmp_path):
    split_folders(tmp_path / "parcels")  # 3 bands: the model's default is 4
    class_folders(tmp_path / "scenes")
    out = tmp_path / "out"
    code, data = run_json(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(out),
        "--data", str(tmp_path / "parcels"), "--data", str(tmp_path / "scenes"),
    )  # fmt: skip
    assert code == 0 and data["verified"] is True, data
    config = yaml.safe_load(Path(data["benchmark_config"]).read_text())
    tasks = {t["name"]: t for t in config["tasks"]}
    assert list(tasks) == ["parcels", "scenes"]
    seg, cls = tasks["parcels"], tasks["scenes"]
    assert (seg["type"], seg["metric"], seg["direction"]) == ("segmentation", "val/mIoU", "max")
    assert (cls["type"], cls["metric"], cls["direction"]) == (
        "classification",
        "val/Accuracy",
        "max",
    )
    assert seg["terratorch_task"]["model_args"]["backbone_in_chans"] == 3
    assert cls["terratorch_task"]["model_args"]["backbone_in_chans"] == 5
    assert cls["datamodule"]["init_args"]["num_classes"] == 2
    # A real run's settings in the file; the limits only in the verifying copy.
    assert config["defaults"]["trainer_args"]["max_epochs"] > 1
    assert "limit_train_batches" not in config["defaults"]["trainer_args"]
    assert not (out / "data").exists()  # no smoke data
    benchmark = next(c for c in data["checks"] if c["name"] == "benchmark")["detail"]
    assert "parcels: best_val/mIoU" in benchmark and "scenes: best_val/Accuracy" in benchmark
    # The fast checks ran the backbone the first task builds: 3 bands, not the model's 4.
    features = next(c for c in data["checks"] if c["name"] == "features")["detail"]
    assert "input: " in features and "(2, 3, " in features, features
    # ... and at the datasets' 32x32 tiles, besides the analysed size and twice it.
    sizes = next(c for c in data["checks"] if c["name"] == "sizes")["detail"]
    assert sizes == "3 features on their grids at 64x64, 128x128 and 32x32", sizes


@pytest.mark.e2e
def test_a_multitemporal_stack_verifies_and_the_yaml_runs_standalone(tmp_path):
    stack_pool(tmp_path / "fields", channels=2, frames=6)  # the model takes 6 frames
    out = tmp_path / "out"
    code, data = run_json(
        "new-backbone", str(MODELS / "temporal.py"), "--out", str(out),
        "--data", str(tmp_path / "fields"),
    )  # fmt: skip
    assert code == 0 and data["verified"] is True, data
    config = yaml.safe_load(Path(data["benchmark_config"]).read_text())
    task = config["tasks"][0]
    args = task["datamodule"]["init_args"]
    assert task["type"] == "regression" and task["metric"] == "val/RMSE"
    assert task["terratorch_task"]["model_args"]["backbone_in_chans"] == 2
    assert args["expand_temporal_dimension"] is True
    # No split in the folder: split files beside the YAML, listing exact file names.
    train_list = out / args["train_split"]  # relative to the folder
    assert train_list.parent == out / "splits" / "fields" and train_list.is_file()
    assert (
        "field0.tif" in train_list.read_text().splitlines()
        or "field0.tif"
        in (out / args["val_split"]).read_text().splitlines()
        + (out / args["test_split"]).read_text().splitlines()
    )

    # The shortened copy the check ran, run again as a person would: plain command, elsewhere.
    short = next((out / ".scaffold" / "runs").glob("*/benchmark.short.yaml"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env() | {"MLFLOW_ALLOW_FILE_STORE": "true"}  # as the printed command sets it
    argv = [str(BIN / "terratorch"), "iterate", "--hpo", "--config", str(short)]
    done = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(short, 0)
    assert "fields: best_val/RMSE" in metrics and math.isfinite(metrics["fields: best_val/RMSE"])


def test_bad_data_is_one_line_exit_2_and_nothing_written(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
        "--data", str(tmp_path / "empty"),
    )  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no images found" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


FIXED = '''
from torch import nn


class Fixed(nn.Module):
    """Three input channels, and no parameter to change them."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())

    def forward(self, x):
        return self.b(self.a(x))
'''


def test_a_model_whose_channels_cannot_follow_the_data_names_the_mismatch(tmp_path):
    model = tmp_path / "fixed_model.py"
    model.write_text(FIXED)
    class_folders(tmp_path / "scenes", bands=5)
    with pytest.raises(
        ScaffoldError,
        match=r"the data has 5 band\(s\), Fixed takes 3 input channels and has "
        r"no in_chans-like parameter",
    ):
        generate(Options(str(model), {}, out=tmp_path / "out", data=(str(tmp_path / "scenes"),)))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_update_with_data_adds_a_task_and_keeps_hand_edits(tmp_path):
    split_folders(tmp_path / "parcels")
    class_folders(tmp_path / "scenes")
    out = tmp_path / "out"
    generate(Options(str(MODELS / "cnn.py"), {}, out=out, data=(str(tmp_path / "parcels"),)))
    config = out / "benchmark.yaml"
    edited = config.read_text().replace("max_epochs: 50", "max_epochs: 30")
    edited = edited.replace("early_stop_patience: 10", "early_stop_patience: 4  # mine")
    config.write_text(edited)

    code, data = run_json("update", str(out), "--data", str(tmp_path / "scenes"), "--no-verify")
    assert code == 0, data
    text = config.read_text()
    assert "max_epochs: 30" in text and "early_stop_patience: 4  # mine" in text
    tasks = yaml.safe_load(text)["tasks"]
    assert [t["name"] for t in tasks] == ["parcels", "scenes"]
    assert tasks[1]["type"] == "classification"
    state = (out / ".scaffold" / "state.json").read_text()
    assert str(tmp_path / "scenes") in state

    # Again without --data: the recorded folders, unchanged, are not read again; nothing changes.
    before = config.read_bytes()
    done = run_cli("update", str(out), "--no-verify", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["changes"] == []
    assert config.read_bytes() == before and "surveying" not in done.stderr


@pytest.mark.e2e
def test_datasets_inside_a_wrapper_folder_verify(tmp_path):
    # As public datasets unpack: a top folder holding one folder that holds the class folders
    # (no split), and one holding two wrappers around the split folders.
    rng = np.random.default_rng(6)
    for klass in ("annualcrop", "forest", "river"):
        for i in range(4):
            write_tif(tmp_path / "scenes" / "ms" / klass / f"{klass}_{i}.tif", image(rng, bands=4))
    split_folders(tmp_path / "floods" / "v1.1" / "data")
    out = tmp_path / "out"
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--json",
        "--data", str(tmp_path / "scenes"), "--data", str(tmp_path / "floods"),
    )  # fmt: skip
    data = json.loads(done.stdout)
    assert done.returncode == 0 and data["verified"] is True, done.stderr
    said = " ".join(done.stderr.split())  # the terminal may wrap the lines
    assert f"scenes: the dataset is in ms/: {tmp_path / 'scenes'} holds that folder" in said
    assert f"floods: the dataset is in v1.1/data/: {tmp_path / 'floods'} holds" in said
    tasks = {
        t["name"]: t for t in yaml.safe_load(Path(data["benchmark_config"]).read_text())["tasks"]
    }
    assert list(tasks) == ["scenes", "floods"]
    scenes, floods = (tasks[n]["datamodule"]["init_args"] for n in ("scenes", "floods"))
    assert tasks["scenes"]["type"] == "classification" and scenes["num_classes"] == 3
    assert scenes["train_data_root"] == str(tmp_path / "scenes" / "ms")
    assert tasks["floods"]["type"] == "segmentation"
    assert floods["train_data_root"] == str(
        tmp_path / "floods" / "v1.1" / "data" / "train" / "images"
    )
    benchmark = next(c for c in data["checks"] if c["name"] == "benchmark")["detail"]
    assert "scenes: best_val/Accuracy" in benchmark and "floods: best_val/mIoU" in benchmark


@pytest.mark.e2e
def test_region_folders_in_the_splits_verify(tmp_path):
    # test/regionA/img/*.tif and the like: the YAML reads each split through */img/*_img.tif,
    # and the verifying run trains and tests on every region's tiles.
    region_folders(tmp_path / "regions")
    code, data = run_json(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
        "--data", str(tmp_path / "regions"),
    )  # fmt: skip
    assert code == 0 and data["verified"] is True, data
    task = yaml.safe_load(Path(data["benchmark_config"]).read_text())["tasks"][0]
    args = task["datamodule"]["init_args"]
    assert (
        args["test_data_root"] == args["test_label_data_root"] == str(tmp_path / "regions" / "test")
    )
    assert (args["img_grep"], args["label_grep"]) == ("*/img/*_img.tif", "*/lbl/*_lbl.tif")
    benchmark = next(c for c in data["checks"] if c["name"] == "benchmark")["detail"]
    assert "regions: best_val/mIoU" in benchmark
