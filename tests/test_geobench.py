"""`--geobench` end to end: tiny datasets in GEO-Bench's on-disk layout (written with h5py) that
TerraTorch's own datamodules read become tasks; `--bands` chooses each task's bands by name, the
pretrained first layer is sliced to them, and per-band forward arguments follow them."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from .conftest import MODELS, run_cli, run_fresh, run_json
from .geobench_data import all_bands, write_geobench, write_suite

MODEL_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW"]  # the test model's pretrained bands
# Given as Sentinel-2 ids: B02, B03, B04, B8A are BLUE, GREEN, RED, NIR_NARROW.
GIVEN_BANDS = "B02,green,RED,B8A"
# The bands each task reads: the model's that its dataset has, in the model's order.
# Chesapeake's NIR is not Sentinel-2's NIR_NARROW: it reads RGB only.
EXPECTED_BANDS = {
    "bigearthnet": MODEL_BANDS,
    "chesapeake": ["BLUE", "GREEN", "RED"],
    "eurosat": MODEL_BANDS,
    "pv4ger": ["BLUE", "GREEN", "RED"],
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return write_suite(tmp_path_factory.mktemp("geobench") / "root")


@pytest.fixture(scope="module")
def bench(suite, tmp_path_factory):
    """One generated and verified output for the CNN with pretrained weights and --bands."""
    work = tmp_path_factory.mktemp("bench")
    sys.path.insert(0, str(MODELS))
    try:
        from cnn import SmallCNN
    finally:
        sys.path.remove(str(MODELS))
    torch.manual_seed(3)
    ckpt = work / "pretrained.pt"
    torch.save(SmallCNN(in_chans=len(MODEL_BANDS)).state_dict(), ckpt)
    out = work / "out"
    code, data = run_json(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--name", "gb_cnn",
        "--geobench", str(suite), "--bands", GIVEN_BANDS, "--weights", str(ckpt),
    )  # fmt: skip
    config = yaml.safe_load(Path(data["benchmark_config"]).read_text())
    return code, data, config, ckpt, out


@pytest.mark.e2e
def test_every_dataset_is_a_task_on_terratorchs_datamodule(bench):
    code, data, config, _, _ = bench
    assert code == 0 and data["verified"] is True, data
    tasks = {t["name"]: t for t in config["tasks"]}
    assert sorted(tasks) == ["bigearthnet", "chesapeake", "eurosat", "pv4ger"]
    facts = {
        n: (t["type"], t["metric"], t["direction"], t["datamodule"]["class_path"])
        for n, t in tasks.items()
    }
    assert facts == {
        "bigearthnet": (
            "multilabel_classification", "val/Multilabel_Accuracy", "max",
            "terratorch.datamodules.MBigEarthNonGeoDataModule",
        ),
        "chesapeake": (
            "segmentation", "val/mIoU", "max",
            "terratorch.datamodules.MChesapeakeLandcoverNonGeoDataModule",
        ),
        "eurosat": (
            "classification", "val/Accuracy", "max",
            "terratorch.datamodules.MEuroSATNonGeoDataModule",
        ),
        "pv4ger": (
            "classification", "val/Accuracy", "max",
            "terratorch.datamodules.MPv4gerNonGeoDataModule",
        ),
    }  # fmt: skip
    # Classes from the dataset's files: label_stats vectors, label arrays, label_map, pickles.
    classes = {n: t["terratorch_task"]["model_args"]["num_classes"] for n, t in tasks.items()}
    assert classes == {"bigearthnet": 4, "chesapeake": 3, "eurosat": 3, "pv4ger": 2}
    decoders = {n: t["terratorch_task"]["model_args"]["decoder"] for n, t in tasks.items()}
    assert decoders["chesapeake"] == "UperNetDecoder" and decoders["eurosat"] == "IdentityDecoder"
    assert tasks["bigearthnet"]["terratorch_task"]["loss"] == "bce"
    for t in tasks.values():
        assert t["datamodule"]["init_args"]["partition"] == "default"
    # Every task ran in the verifying run, on its own metric.
    detail = next(c["detail"] for c in data["checks"] if c["name"] == "benchmark")
    for name, t in tasks.items():
        assert f"{name}: best_{t['metric']} = " in detail


@pytest.mark.e2e
def test_each_task_asks_its_datamodule_for_the_models_bands_it_has(bench):
    _, _, config, _, out = bench
    tasks = {t["name"]: t for t in config["tasks"]}
    for name, bands in EXPECTED_BANDS.items():
        model_args = tasks[name]["terratorch_task"]["model_args"]
        assert tasks[name]["datamodule"]["init_args"]["bands"] == bands, name
        assert model_args["backbone_bands"] == bands, name
        assert model_args["backbone_in_chans"] == len(bands), name
    state = json.loads((out / ".scaffold" / "state.json").read_text())
    assert state["options"]["bands"] == MODEL_BANDS  # recorded by TerraTorch's names
    assert state["options"]["geobench"] and state["options"]["partition"] == "default"
    # BigEarthNet's reader hands int16 on: the task makes it float before Normalize.
    init = tasks["bigearthnet"]["datamodule"]["init_args"]
    assert init["train_transform"][0]["class_path"] == "albumentations.ToFloat"
    assert "train_transform" not in tasks["eurosat"]["datamodule"]["init_args"]


BUILD_FIRST_LAYERS = r"""
import json, sys, torch, yaml
out, result = sys.argv[1], sys.argv[2]
sys.path.insert(0, out)
import gb_cnn, timm
from terratorch.registry import MODEL_FACTORY_REGISTRY
cfg = yaml.safe_load(open(out + "/benchmark.yaml"))
defaults = cfg["defaults"]["terratorch_task"]
factory = MODEL_FACTORY_REGISTRY.build(defaults["model_factory"])
found = {}
for task in cfg["tasks"]:
    args = {**defaults["model_args"], **task["terratorch_task"]["model_args"]}
    kind = "segmentation" if task["type"] == "segmentation" else "classification"
    model = factory.build_model(kind, **args)
    [key] = [k for k in model.state_dict() if k.endswith("model.stem.0.weight")]
    found[task["name"]] = model.state_dict()[key]
# A band the checkpoint lacks: initialised, and said so.
extra = timm.create_model("gb_cnn", pretrained=True, in_chans=2, bands=["GREEN", "SWIR_1"])
found["extra"] = extra.state_dict()["model.stem.0.weight"]
found["extra_bands"] = extra.band_weights
torch.save(found, result)
"""


@pytest.mark.e2e
def test_each_tasks_first_layer_is_the_checkpoint_sliced_by_band_name(bench, tmp_path):
    code, data, _config, ckpt, out = bench
    assert code == 0, data
    result = tmp_path / "first.pt"
    done = run_fresh([sys.executable, "-c", BUILD_FIRST_LAYERS, str(out), str(result)])
    assert done.returncode == 0, done.stderr[-3000:]
    found = torch.load(result, weights_only=False)
    pretrained = torch.load(ckpt)["stem.0.weight"]  # (8, 4, 3, 3): BLUE, GREEN, RED, NIR_NARROW
    for name, bands in EXPECTED_BANDS.items():
        want = pretrained[:, [MODEL_BANDS.index(b) for b in bands]]
        assert torch.equal(found[name], want), name
    assert torch.equal(found["extra"][:, 0], pretrained[:, 1])  # GREEN from the checkpoint
    assert not torch.equal(found["extra"][:, 1], pretrained[:, 1])
    assert found["extra_bands"] == {"loaded": ["GREEN"], "new": ["SWIR_1"]}
    # The YAML and the weights check say which bands were loaded.
    text = (out / "benchmark.yaml").read_text()
    assert "# first layer loaded from the checkpoint: BLUE, GREEN, RED." in text
    weights = next(c["detail"] for c in data["checks"] if c["name"] == "band weights")
    assert "chesapeake: first layer loaded BLUE, GREEN, RED" in weights
    assert "eurosat: first layer loaded BLUE, GREEN, RED, NIR_NARROW" in weights


def test_a_wavelength_conditioned_model_gets_each_tasks_wavelengths(suite, tmp_path):
    # One wavelength per band of --bands (micrometres: the Sentinel-2 table's centres).
    waves = [0.4924, 0.5598, 0.6646, 0.8647]
    code, data = run_json(
        "new-backbone", str(MODELS / "wavelength.py"), "--out", str(tmp_path / "out"),
        "--geobench", str(suite), "--bands", ",".join(MODEL_BANDS) + ",SWIR_1",
        "--forward-arg", f"wavelengths={waves}", "--no-verify",
    )  # fmt: skip
    assert code == 0, data
    config = yaml.safe_load(Path(data["benchmark_config"]).read_text())
    got = {
        t["name"]: t["terratorch_task"]["model_args"]["backbone_forward_args"]["wavelengths"]
        for t in config["tasks"]
    }
    # SWIR_1 was not given a value: its centre comes from the table, in the given unit.
    assert got == {
        "bigearthnet": [*waves, 1.6137],
        "chesapeake": waves[:3],
        "eurosat": [*waves, 1.6137],
        "pv4ger": waves[:3],
    }
    ins = {
        t["name"]: t["terratorch_task"]["model_args"]["backbone_in_chans"] for t in config["tasks"]
    }
    assert ins == {"bigearthnet": 5, "chesapeake": 3, "eurosat": 5, "pv4ger": 3}


def test_a_task_with_none_of_the_bands_is_left_out_and_update_replays_geobench(suite, tmp_path):
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
        "--geobench", str(suite), "--bands", "NIR_NARROW,SWIR_1", "--no-verify",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((tmp_path / "out" / "benchmark.yaml").read_text())
    assert [t["name"] for t in config["tasks"]] == ["bigearthnet", "eurosat"]
    assert "chesapeake: left out" in done.stderr and "pv4ger: left out" in done.stderr
    # update replays the recorded --geobench; new --bands replace the recorded ones.
    done = run_cli("update", str(tmp_path / "out"), "--bands", "RED,BLUE", "--no-verify")
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((tmp_path / "out" / "benchmark.yaml").read_text())
    got = {t["name"]: t["datamodule"]["init_args"]["bands"] for t in config["tasks"]}
    assert got == {n: ["RED", "BLUE"] for n in EXPECTED_BANDS}


def _one_line_error(done, *parts: str) -> None:
    assert done.returncode == 2, done.stderr
    # Progress lines (the survey) may come first; the error is the one last line.
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert [line for line in lines if line.startswith("error")] == lines[-1:], done.stderr
    text = lines[-1]
    for part in parts:
        assert part in text, done.stderr


def test_an_unknown_band_is_exit_2_naming_the_known_ones(suite, tmp_path):
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
        "--geobench", str(suite), "--bands", "BLUE,GREN", "--no-verify",
    )  # fmt: skip
    _one_line_error(done, "--bands: unknown band 'GREN'", "NIR_NARROW", "SWIR_1")
    assert not (tmp_path / "out").exists()


def test_an_empty_root_and_a_malformed_folder_are_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "o1"),
                   "--geobench", str(tmp_path / "empty"), "--no-verify")  # fmt: skip
    _one_line_error(done, "no GEO-Bench v1 dataset folder under it", "m-eurosat")
    bad = tmp_path / "bad"
    where = write_geobench(bad, "m-pv4ger", all_bands("m-pv4ger"), "pickle", num_classes=2)
    (where / "valid_000.hdf5").unlink()
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "o2"),
                   "--geobench", str(bad), "--no-verify")  # fmt: skip
    _one_line_error(done, "m-pv4ger", "have no .hdf5 file", "valid_000.hdf5")
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "o3"),
                   "--geobench", str(bad), "--partition", "0.10x_train", "--no-verify")  # fmt: skip
    _one_line_error(done, "no 0.10x_train_partition.json", "partitions there: default")
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_band_names_are_terratorchs_and_sentinel2_ids_are_aliases():
    from terratorch.datasets.utils import HLSBands

    from scaffold.data.bands import NAMES, WAVELENGTHS_NM, parse_bands
    from scaffold.data.geobench import readers

    every = {b for r in readers().values() for b in r.dataset.all_band_names}
    assert every | set(HLSBands.__members__) <= set(NAMES)
    assert parse_bands("B02, b8a ,B08,swir_1") == ("BLUE", "NIR_NARROW", "NIR_BROAD", "SWIR_1")
    assert WAVELENGTHS_NM["NIR_NARROW"] == (864.7, 21.0)  # Sentinel-2A B8A, ESA's S2-SRF


def test_inspect_shows_the_bands_by_name():
    code, data = run_json("inspect", str(MODELS / "cnn.py"), "--bands", "B02,B03,B04,B8A")
    assert code == 0 and data["bands"] == MODEL_BANDS


@pytest.mark.e2e
def test_geotiff_band_descriptions_are_band_names_for_bands(tmp_path):
    import rasterio

    from .test_data import split_folders

    split_folders(tmp_path / "tiles")  # 3 bands at levels 100, 200, 300
    for path in (tmp_path / "tiles").rglob("images/*.tif"):
        with rasterio.open(path, "r+") as dst:
            for i, description in enumerate(["RED", "B03", "NIR_NARROW"], start=1):
                dst.set_band_description(i, description)
    torch.manual_seed(5)
    sys.path.insert(0, str(MODELS))
    try:
        from cnn import SmallCNN
    finally:
        sys.path.remove(str(MODELS))
    ckpt = tmp_path / "pretrained.pt"
    torch.save(SmallCNN(in_chans=len(MODEL_BANDS)).state_dict(), ckpt)
    code, data = run_json(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
        "--name", "tiles_cnn", "--data", str(tmp_path / "tiles"), "--bands", GIVEN_BANDS,
        "--weights", str(ckpt),
    )  # fmt: skip
    assert code == 0 and data["verified"] is True, data
    [task] = yaml.safe_load(Path(data["benchmark_config"]).read_text())["tasks"]
    init = task["datamodule"]["init_args"]
    # The model's order (BLUE, GREEN, RED, NIR_NARROW) of the bands the files have.
    assert init["dataset_bands"] == ["RED", "GREEN", "NIR_NARROW"]
    assert init["output_bands"] == ["GREEN", "RED", "NIR_NARROW"]
    assert [round(m, -2) for m in init["means"]] == [200, 100, 300]  # the output bands' own
    assert task["terratorch_task"]["model_args"]["backbone_bands"] == init["output_bands"]
    assert task["terratorch_task"]["model_args"]["backbone_in_chans"] == 3
    weights = next(c["detail"] for c in data["checks"] if c["name"] == "band weights")
    assert "tiles: first layer loaded GREEN, RED, NIR_NARROW" in weights


def test_geobench_combines_with_data_and_unnamed_bands_are_said(suite, tmp_path):
    from .test_data import split_folders

    split_folders(tmp_path / "tiles")  # 3 bands without descriptions
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
        "--data", str(tmp_path / "tiles"), "--geobench", str(suite), "--bands", GIVEN_BANDS,
        "--no-verify",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((tmp_path / "out" / "benchmark.yaml").read_text())
    tasks = {t["name"]: t for t in config["tasks"]}
    assert list(tasks) == ["tiles", *EXPECTED_BANDS]
    assert "backbone_bands" not in tasks["tiles"]["terratorch_task"]["model_args"]
    assert tasks["tiles"]["terratorch_task"]["model_args"]["backbone_in_chans"] == 3
    assert tasks["pv4ger"]["datamodule"]["init_args"]["bands"] == EXPECTED_BANDS["pv4ger"]
    text = " ".join(done.stderr.split())
    assert "tiles: its files' band descriptions are not band names" in text


def test_bands_that_do_not_fit_the_checkpoint_are_exit_2(suite, tmp_path):
    sys.path.insert(0, str(MODELS))
    try:
        from cnn import SmallCNN
    finally:
        sys.path.remove(str(MODELS))
    ckpt = tmp_path / "four.pt"
    torch.save(SmallCNN(in_chans=4).state_dict(), ckpt)
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
        "--geobench", str(suite), "--bands", "BLUE,GREEN,RED", "--weights", str(ckpt),
        "--no-verify",
    )  # fmt: skip
    _one_line_error(done, "--bands names 3 bands", "stem.0.weight) reads 4 input channels")
    assert not (tmp_path / "out").exists()


class BandInfo:  # stands for a class of GEO-Bench's own, pickled beside the label
    def __init__(self, name: str) -> None:
        self.name = name


def test_pickled_labels_are_read_without_importing_their_classes(tmp_path):
    import pickle

    import h5py
    import numpy as np

    from scaffold.data.geobench import survey_geobench

    where = write_geobench(tmp_path, "m-pv4ger", all_bands("m-pv4ger"), "pickle", num_classes=2)
    for i, path in enumerate(sorted(where.glob("*.hdf5"))):
        attrs = {"label": np.int64(i % 3), "bands_info": [BandInfo("RED")]}
        with h5py.File(path, "a") as h5:
            # As geobench pickles its band infos; geobench is not installed here: importing
            # the class would fail.
            data = pickle.dumps(attrs, protocol=0)
            data = data.replace(BandInfo.__module__.encode(), b"geobench.dataset")
            h5.attrs["pickle"] = str(data)
    [task] = survey_geobench(tmp_path)
    assert (task.task, task.num_classes) == ("classification", 3)


def test_the_band_weights_check_fails_when_a_task_loads_another_bands_weights(suite, tmp_path):
    # A hand edit that loads every band from the checkpoint's first channel: the tasks still
    # build and run, and only the band-weights check can tell.
    sys.path.insert(0, str(MODELS))
    try:
        from cnn import SmallCNN
    finally:
        sys.path.remove(str(MODELS))
    torch.manual_seed(4)
    ckpt = tmp_path / "pretrained.pt"
    torch.save(SmallCNN(in_chans=len(MODEL_BANDS)).state_dict(), ckpt)
    out = tmp_path / "out"
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--name", "gb_edit",
        "--geobench", str(suite), "--bands", GIVEN_BANDS, "--weights", str(ckpt), "--no-verify",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    code, data = run_json("verify", str(out), "--quick")
    checks = {c["name"]: c for c in data["checks"]}
    assert code == 0 and checks["band weights"]["ok"], data
    checkpoint = out / "gb_edit" / "_runtime" / "checkpoint.py"  # the runtime's band selection
    text = checkpoint.read_text()
    picked = "columns.append(weight[:, list(pretrained_bands).index(band)])"
    assert text.count(picked) == 1
    checkpoint.write_text(text.replace(picked, "columns.append(weight[:, 0])"))
    code, data = run_json("verify", str(out), "--quick")
    checks = {c["name"]: c for c in data["checks"]}
    assert code == 1 and checks["weights"]["ok"], data
    assert not checks["band weights"]["ok"]
    # GREEN is the first band whose channel is not the checkpoint's first one.
    detail = checks["band weights"]["detail"]
    assert "channel 1 (GREEN) is not the checkpoint's weights of that band" in detail, detail


def test_the_plan_reads_the_bands_and_plans_each_task_writing_nothing(suite, tmp_path):
    from scaffold.errors import ScaffoldError
    from scaffold.pipeline.new_backbone import Options, plan_new

    target = str(MODELS / "cnn.py")
    out = tmp_path / "out"
    given = tuple(GIVEN_BANDS.split(","))
    plan = plan_new(Options(target, {}, out=out, geobench=str(suite), bands=given))
    assert not out.exists()
    assert plan.recorded.bands == tuple(MODEL_BANDS)  # by TerraTorch's names from here on
    assert plan.recorded.geobench == str(suite.resolve())
    assert {p.task.name: list(p.bands) for p in plan.planned} == EXPECTED_BANDS
    with pytest.raises(ScaffoldError, match=r"--partition 0\.10x_train: a GEO-Bench partition"):
        plan_new(Options(target, {}, out=out, partition="0.10x_train"))
    with pytest.raises(ScaffoldError, match=r"no dataset has any of --bands THERMAL_INFRARED_1"):
        plan_new(Options(target, {}, out=out, geobench=str(suite), bands=("thermal_infrared_1",)))
    assert list(tmp_path.iterdir()) == []


# -- what a GEO-Bench folder may hold ------------------------------------------------------------


class Payload:
    """Pickles as a call of os.system: unpickling it runs the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _plant_payload(sample: Path, marker: Path) -> None:
    with h5py.File(sample, "a") as h5:
        h5.attrs["pickle"] = str(pickle.dumps({"label": 1, "x": Payload(f"touch {marker}")}))


SYSTEM = f"{os.system.__module__}.system"  # how a pickle names os.system (posix.system)


def test_a_pickle_that_would_run_code_is_refused_before_anything_reads_it(tmp_path):
    root = tmp_path / "root"
    where = write_geobench(root, "m-pv4ger", all_bands("m-pv4ger"), "pickle", num_classes=2)
    marker = tmp_path / "MARKER"
    _plant_payload(where / "valid_001.hdf5", marker)
    out = tmp_path / "out"
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(out),
                   "--geobench", str(root), "--no-verify")  # fmt: skip
    _one_line_error(done, str(where / "valid_001.hdf5"), f"would load {SYSTEM}")
    assert not marker.exists() and not out.exists()


def test_verify_and_update_check_the_pickles_again_before_any_reader(tmp_path):
    root = tmp_path / "root"
    where = write_geobench(root, "m-pv4ger", all_bands("m-pv4ger"), "pickle", num_classes=2)
    out = tmp_path / "out"
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(out),
                   "--geobench", str(root), "--no-verify")  # fmt: skip
    assert done.returncode == 0, done.stderr
    marker = tmp_path / "MARKER"
    _plant_payload(where / "train_000.hdf5", marker)  # the folder changed after generation
    code, data = run_json("verify", str(out), "--quick")
    checks = {c["name"]: c for c in data["checks"]}
    assert code == 1 and not checks["geobench data"]["ok"], data
    detail = checks["geobench data"]["detail"]
    assert str(where / "train_000.hdf5") in detail and f"would load {SYSTEM}" in detail
    assert list(checks) == ["folder", "geobench data"]  # no reader ran after it
    before = (out / "benchmark.yaml").read_text()
    done = run_cli("update", str(out), "--no-verify")
    _one_line_error(done, str(where / "train_000.hdf5"), f"would load {SYSTEM}")
    assert (out / "benchmark.yaml").read_text() == before
    assert not marker.exists()


def test_the_pickle_check_builds_what_geobench_writes_and_refuses_the_rest():
    from scaffold.data.pickles import UnsafePickle, load_attributes, unsafe_global

    # geobench's own attributes: plain values, numpy arrays and scalars, dates, a band info.
    attrs = {
        "label": np.int64(2),
        "bands_order": ["02 - Blue"],
        "02 - Blue": {"date": __import__("datetime").date(2020, 1, 2), "data": np.ones((2, 2))},
    }
    for protocol in (0, 2, 4, 5):
        got = load_attributes(str(pickle.dumps(attrs, protocol=protocol)))
        assert got["label"] == 2 and got["bands_order"] == ["02 - Blue"], protocol
        assert got["02 - Blue"]["data"].tolist() == [[1.0, 1.0], [1.0, 1.0]], protocol
    # An array of Python objects would have numpy unpickle its items: refused too.
    objects = np.array([Payload("true")], dtype=object)
    assert unsafe_global(str(pickle.dumps({"label": 0, "x": objects}))) is not None
    assert unsafe_global(str(pickle.dumps({"label": 0, "x": Payload("true")}))) == SYSTEM
    with pytest.raises(UnsafePickle, match=r"builtins\.eval"):
        load_attributes(str(b"cbuiltins\neval\n(S'1'\ntR."))


def _nan_band(sample: Path) -> str:
    with h5py.File(sample, "a") as h5:
        key = sorted(k for k in h5 if "label" not in k)[2]
        data = np.array(h5[key])
        data[3, 4] = np.nan
        h5[key][...] = data
    return key


def test_a_nan_band_in_a_sample_is_one_line_naming_the_file(tmp_path):
    where = write_geobench(tmp_path / "root", "m-eurosat", all_bands("m-eurosat"), "map")
    key = _nan_band(where / "valid_002.hdf5")
    out = tmp_path / "out"
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(out),
                   "--geobench", str(tmp_path / "root"), "--no-verify")  # fmt: skip
    _one_line_error(done, str(where / "valid_002.hdf5"), f"band {key} holds NaN")
    assert not out.exists()


def test_a_test_sample_missing_a_band_is_one_line_naming_it(tmp_path):
    where = write_geobench(tmp_path / "root", "m-eurosat", all_bands("m-eurosat"), "map")
    with h5py.File(where / "test_003.hdf5", "a") as h5:
        del h5[sorted(h5)[5]]
    out = tmp_path / "out"
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(out),
                   "--geobench", str(tmp_path / "root"), "--no-verify")  # fmt: skip
    _one_line_error(done, "test_003.hdf5 holds 12 band arrays", "reads 13")
    assert not out.exists()


def _set_label(sample: Path, label: np.ndarray) -> None:
    with h5py.File(sample, "a") as h5:
        del h5["label"]
        h5.create_dataset("label", data=label)


def test_a_nan_label_is_exit_2_naming_the_file(tmp_path):
    where = write_geobench(tmp_path / "root", "m-chesapeake", all_bands("m-chesapeake"), "mask")
    label = np.zeros((32, 32), np.float32)
    label[0, 0] = np.nan
    _set_label(where / "train_001.hdf5", label)
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
                   "--geobench", str(tmp_path / "root"), "--no-verify")  # fmt: skip
    _one_line_error(done, str(where / "train_001.hdf5"), "label array label holds NaN")


def test_a_255_label_is_the_ignore_index_not_a_class(tmp_path):
    where = write_geobench(tmp_path / "root", "m-chesapeake", all_bands("m-chesapeake"), "mask")
    with h5py.File(where / "train_002.hdf5", "r") as h5:
        label = np.array(h5["label"])
    label[7, 7] = 255  # one pixel of "no label" among the classes 0..2
    _set_label(where / "train_002.hdf5", label)
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
                   "--geobench", str(tmp_path / "root"), "--no-verify")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "chesapeake: segmentation (3 classes, ignore value 255" in done.stderr
    [task] = yaml.safe_load((tmp_path / "out" / "benchmark.yaml").read_text())["tasks"]
    assert task["terratorch_task"]["ignore_index"] == 255
    assert task["terratorch_task"]["model_args"]["num_classes"] == 3
    # A value beyond the training classes that is no "no label" value is refused.
    with h5py.File(where / "test_000.hdf5", "r") as h5:
        label = np.array(h5["label"])
    label[0, 0] = 5
    _set_label(where / "test_000.hdf5", label)
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out2"),
                   "--geobench", str(tmp_path / "root"), "--no-verify")  # fmt: skip
    _one_line_error(done, "test_000.hdf5: label value(s) [5] outside the classes 0..2")


def test_a_data_task_and_a_geobench_task_of_one_name_both_get_their_files(tmp_path):
    from .test_data_cli import class_folders

    class_folders(tmp_path / "eurosat")  # a --data folder named like GEO-Bench's m-eurosat
    write_geobench(tmp_path / "root", "m-eurosat", all_bands("m-eurosat"), "map")
    out = tmp_path / "out"
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--data",
        str(tmp_path / "eurosat"), "--geobench", str(tmp_path / "root"), "--iterate2",
        "--no-verify",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((out / "benchmark.yaml").read_text())
    names = [t["name"] for t in config["tasks"]]
    assert names == ["eurosat", "eurosat_2"]
    readers = {}
    for name in names:  # each task its own fit config and iterate2 HPO YAML
        fit = yaml.safe_load((out / "fit" / f"{name}.yaml").read_text())
        readers[name] = fit["data"]["class_path"].rsplit(".", 1)[-1]
        assert (out / "iterate2" / f"{name}.yaml").is_file(), name
    assert readers == {
        "eurosat": "GenericNonGeoClassificationDataModule",
        "eurosat_2": "MEuroSATNonGeoDataModule",
    }


def test_a_sample_that_breaks_a_loader_worker_is_named_by_the_trainable_check(tmp_path):
    from scaffold.data.geobench import PlannedTask, survey_geobench
    from scaffold.render.tasks import geobench_datamodule
    from scaffold.verify.trainable import first_batch
    from scaffold.verify.types import CheckFailed

    where = write_geobench(tmp_path / "root", "m-eurosat", all_bands("m-eurosat"), "map")
    [task] = survey_geobench(tmp_path / "root")
    datamodule = geobench_datamodule(PlannedTask(task, task.bands, {}, ""))  # as the YAML has it
    assert datamodule["init_args"]["num_workers"] > 0
    config = {"tasks": [{"name": task.name, "datamodule": datamodule}]}
    assert first_batch(config)["image"].shape[0] == 4
    # A training sample damaged after generation (a copy cut short): the datamodule's
    # DataLoader worker processes read it, and their error names the worker only.
    broken = where / "train_002.hdf5"
    broken.write_bytes(broken.read_bytes()[:1000])
    with pytest.raises(CheckFailed) as failed:
        first_batch(config)
    assert f"training sample 2 ({broken}): OSError" in str(failed.value)
