"""`--geobench2`: tiny datasets in GEO-Bench-2's on-disk format (tortilla files written with the
writer geobenchv2's own scripts use) become tasks on geobenchv2's own datamodules, with the
leaderboard's metric, the model's bands by name per modality, and time series as (B, C, T, H, W).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import MODELS, clean_env, generated_backbone, model_class, run_cli, run_json

pytest.importorskip(
    "geobench_v2", reason="geobenchv2 is not installed: pip install 'scaffold-backbone[geobench2]'"
)
pytest.importorskip(
    "tacotoolbox", reason="the tests write GEO-Bench-2 files with tacotoolbox (the test extra)"
)

from .geobench2_data import (
    SPLITS,
    write_classification,
    write_regression_series,
    write_time_series,
    write_two_modalities,
)

SIZES = [SPLITS.count("train"), SPLITS.count("validation"), SPLITS.count("test")]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A GEO-Bench-2 download: a classification set, a two-modality segmentation set and a time
    series, each in its own folder (as the package's download keeps them)."""
    root = tmp_path_factory.mktemp("geobench2") / "root"
    write_classification(root / "forestnet")
    write_two_modalities(root / "flair2")
    write_time_series(root / "pastis", frames=5)
    return root


@pytest.fixture(scope="module")
def cnn(root, tmp_path_factory):
    """The CNN generated (not verified) on the three datasets, its bands named as a person
    names them: Sentinel-2 ids, TerraTorch names, any case."""
    out = tmp_path_factory.mktemp("gb2") / "out"
    code, data = run_json(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--name", "gb2_cnn",
        "--geobench2", str(root), "--datasets", "forestnet,flair2,pastis",
        "--bands", "B02,green,RED,NIR", "--no-verify",
    )  # fmt: skip
    assert code == 0, data
    config = yaml.safe_load((out / "benchmark.yaml").read_text())
    return out, {t["name"]: t for t in config["tasks"]}


def _batch(task: dict) -> dict:
    """The first training batch of a task's datamodule, built as the YAML says."""
    from scaffold.datamodules.geobench2 import GeoBench2DataModule as cls

    assert task["datamodule"]["class_path"] == "scaffold.datamodules.geobench2.GeoBench2DataModule"
    args = dict(task["datamodule"]["init_args"], num_workers=0)
    datamodule = cls(**args)
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def test_default_is_the_core_set_that_root_holds_and_detection_is_left_out(root, tmp_path):
    from scaffold.data.geobench2 import survey_geobench2

    # a Core detection dataset's file beside them (any tortilla: it is left out unread)
    (root / "substation").mkdir(exist_ok=True)
    source = root / "forestnet" / "geobench_forestnet.tortilla"
    (root / "substation" / "geobench_substation.tortilla").write_bytes(source.read_bytes())
    try:
        tasks, skipped = survey_geobench2(root)
    finally:
        (root / "substation" / "geobench_substation.tortilla").unlink()
    # forestnet is not in the leaderboard's Core set: only --datasets asks for it
    assert [t.name for t in tasks] == ["pastis", "flair2"]
    assert [(s.name, s.reason.split(":")[0]) for s in skipped] == [
        ("substation", "object detection / instance segmentation")
    ]
    flair2, pastis = tasks[1], tasks[0]
    assert (flair2.task, flair2.num_classes, flair2.leaderboard_metric) == (
        "segmentation", 13, "Multiclass_Jaccard_Index"
    )  # fmt: skip
    assert flair2.modalities == (
        ("aerial", ("red", "green", "blue", "nir")),
        ("elevation", ("elevation",)),
    )
    assert flair2.band_names == (("RED", "GREEN", "BLUE", "NIR"), ("ELEVATION",))
    assert list(flair2.split_sizes) == SIZES
    assert pastis.time_series and not flair2.time_series
    assert [m for m, _ in pastis.modalities] == ["s2", "s1_asc", "s1_desc"]
    assert list(pastis.split_sizes) == SIZES  # counted over its three part files
    assert pastis.means["B02"] > 0 and pastis.stds["B02"] > 0  # the dataset's own statistics


def test_tasks_read_the_models_bands_by_name_with_the_leaderboards_metrics(cnn):
    out, tasks = cnn
    assert sorted(tasks) == ["flair2", "forestnet", "pastis"]
    facts = {n: (t["type"], t["metric"], t["direction"]) for n, t in tasks.items()}
    assert facts == {
        "forestnet": ("classification", "val/Accuracy_Micro", "max"),
        "flair2": ("segmentation", "val/mIoU", "max"),
        "pastis": ("segmentation", "val/mIoU", "max"),
    }
    text = (out / "benchmark.yaml").read_text()
    assert "leaderboard metric Overall_Accuracy" in text
    assert text.count("leaderboard metric Multiclass_Jaccard_Index (TerraTorch logs it as") == 2
    args = {n: t["datamodule"]["init_args"] for n, t in tasks.items()}
    # by the dataset's own names, the model's order, per modality where the dataset has several
    assert args["forestnet"]["band_order"] == ["B02", "B03", "B04"]  # Landsat: no NIR by name
    assert args["flair2"]["band_order"] == {"aerial": ["blue", "green", "red", "nir"]}
    assert args["pastis"]["band_order"] == {"s2": ["B02", "B03", "B04"]}  # NIR is not B08
    assert args["pastis"]["dataset_args"] == {"num_time_steps": 1}  # single images: the last
    bands = {n: t["terratorch_task"]["model_args"]["backbone_bands"] for n, t in tasks.items()}
    assert bands == {
        "forestnet": ["BLUE", "GREEN", "RED"],
        "flair2": ["BLUE", "GREEN", "RED", "NIR"],
        "pastis": ["BLUE", "GREEN", "RED"],
    }
    assert tasks["flair2"]["terratorch_task"]["ignore_index"] == 13  # one past the classes
    # scaffold's own datamodule: terratorch-iterate imports every class_path before the package
    assert {t["datamodule"]["class_path"] for t in tasks.values()} == {
        "scaffold.datamodules.geobench2.GeoBench2DataModule"
    }
    for name in ("forestnet", "flair2"):
        root = Path(args[name]["root"])
        assert root.name == name and (root / f"geobench_{name}.tortilla").is_file()


def test_batches_hold_terratorchs_keys_with_the_tasks_channels(cnn):
    _out, tasks = cnn
    batch = _batch(tasks["forestnet"])
    assert sorted(batch) == ["image", "label"]
    assert tuple(batch["image"].shape) == (3, 3, 64, 64)  # the model's size, its three bands
    batch = _batch(tasks["flair2"])
    assert sorted(batch) == ["image", "mask"]
    assert tuple(batch["image"].shape) == (3, 4, 64, 64)
    assert tuple(batch["mask"].shape) == (3, 64, 64)
    assert int(batch["mask"].min()) >= 0 and int(batch["mask"].max()) <= 12
    # normalised by the dataset's statistics: uint8 values of 0..254 are not left as they are
    assert float(batch["image"].abs().max()) < 50


def test_the_tasks_build_and_run_a_batch_through_terratorch(cnn):
    out, _ = cnn
    done = run_cli("verify", str(out), "--quick")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fit/flair2.yaml" in done.stdout and "one training" in done.stdout


def test_a_temporal_model_gets_series_as_bcthw_with_its_frames(root, tmp_path):
    out = tmp_path / "out"
    code, data = run_json(
        "new-backbone", str(MODELS / "temporal.py"), "--out", str(out), "--name", "gb2_t",
        "--geobench2", str(root), "--datasets", "flair2,pastis", "--bands", "B02,B03,B04",
        "--no-verify",
    )  # fmt: skip
    assert code == 0, data
    tasks = {t["name"]: t for t in yaml.safe_load((out / "benchmark.yaml").read_text())["tasks"]}
    assert sorted(tasks) == ["pastis"]  # flair2's single images are left out, with the reason
    args = tasks["pastis"]["datamodule"]["init_args"]
    assert args["dataset_args"] == {"num_time_steps": 6, "temporal_output_format": "CTHW"}
    batch = _batch(tasks["pastis"])
    assert tuple(batch["image"].shape) == (3, 3, 6, 64, 64)  # (B, C, T, H, W), the model's T
    assert tuple(batch["mask"].shape) == (3, 64, 64)
    done = run_cli("verify", str(out), "--quick")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("dataset", "datamodule", "extra"),
    [
        ("biomassters", "GeoBenchBioMasstersDataModule", {}),  # gives (C, T, H, W)
        ("pastis", "GeoBenchPASTISDataModule", {"temporal_output_format": "TCHW"}),
    ],
)
def test_a_series_goes_to_the_model_as_bcthw_whichever_axis_the_dataset_puts_first(
    root, tmp_path, dataset, datamodule, extra
):
    """The wrapper reads which axis is time from the shape, against the frames and bands it
    asked for, and when those are as many (5 frames of 5 bands) from one sample read at
    another frame count; the planned layout it is given (here the wrong one) never decides
    where the data can. Truth: the dataset's own samples, read by geobenchv2 alone."""
    import torch

    from scaffold.datamodules.geobench2 import GeoBench2DataModule

    where = root / dataset
    if dataset == "biomassters":
        where = write_regression_series(tmp_path / dataset)
    bands = ["B02", "B03", "B04", "B05", "B06", "B07"]
    layouts = set()
    for channels in (3, 5):  # 5 bands of 5 frames: the shape cannot tell
        wrapper = GeoBench2DataModule(
            f"geobench_v2.datamodules.{datamodule}", str(where), {"s2": bands[:channels]},
            dataset_args={"num_time_steps": 5, **extra}, time_first=dataset == "biomassters",
            img_size=16, batch_size=2,
        )  # fmt: skip
        wrapper.setup("fit")
        batch = next(iter(wrapper.val_dataloader()))
        raw = wrapper.inner.val_dataset[0]["image_s2"]
        if channels != 5:  # the dataset's own layout, where its shape says it
            layouts.add("CTHW" if raw.shape[:2] == (channels, 5) else "TCHW")
        (layout,) = layouts
        want = raw if layout == "CTHW" else raw.permute(1, 0, 2, 3)
        assert tuple(batch["image"].shape) == (2, channels, 5, 16, 16)
        assert torch.equal(batch["image"][0], want)
    assert layouts == {"CTHW" if dataset == "biomassters" else "TCHW"}


def test_the_time_probe_reads_only_a_modality_that_tells_time_from_bands(tmp_path):
    """s2's 3 bands over 3 frames need the probe at 4 frames, where s1's 4 bands are as many
    as the frames again: only s2 (3 bands, 4 frames) can tell, and it says (C, T, H, W)."""
    import torch

    from scaffold.datamodules.geobench2 import GeoBench2DataModule

    where = write_regression_series(tmp_path / "biomassters")
    wrapper = GeoBench2DataModule(
        "geobench_v2.datamodules.GeoBenchBioMasstersDataModule", str(where),
        {"s1": ["VV_asc", "VH_asc", "VV_desc", "VH_desc"], "s2": ["B02", "B03", "B04"]},
        modalities={"s1": "S1", "s2": "S2"}, dataset_args={"num_time_steps": 3},
        time_first=True, img_size=16, batch_size=2,
    )  # fmt: skip
    wrapper.setup("fit")
    batch = next(iter(wrapper.val_dataloader()))
    raw = wrapper.inner.val_dataset[0]
    assert tuple(batch["image"]["S1"].shape) == (2, 4, 3, 16, 16)
    assert tuple(batch["image"]["S2"].shape) == (2, 3, 3, 16, 16)
    assert torch.equal(batch["image"]["S1"][0], raw["image_s1"])
    assert torch.equal(batch["image"]["S2"][0], raw["image_s2"])


def test_a_temporal_model_verifies_on_a_regression_series(tmp_path):
    """A pixel-wise regression (no classes) of two time series, given as (C, T, H, W) without
    a format argument: the task is regression by RMSE, the model gets its frames, verified."""
    root = tmp_path / "root"
    write_regression_series(root / "biomassters")
    out = tmp_path / "out"
    code, data = run_json(
        "new-backbone", str(MODELS / "temporal.py"), "--out", str(out), "--name", "gb2_bm",
        "--geobench2", str(root), "--bands", "B02,B03,B04",
    )  # fmt: skip
    assert code == 0 and data["verified"] is True, data
    (task,) = yaml.safe_load((out / "benchmark.yaml").read_text())["tasks"]
    assert (task["name"], task["type"], task["metric"]) == ("biomassters", "regression", "val/RMSE")
    assert task["terratorch_task"]["loss"] == "rmse"
    batch = _batch(task)
    assert tuple(batch["image"].shape) == (3, 3, 6, 64, 64)  # (B, C, T, H, W), the model's T
    assert tuple(batch["mask"].shape) == (3, 64, 64)


def test_bands_per_modality_and_a_dataset_without_the_models_modalities(root, cnn):
    from scaffold.data.geobench2 import survey_geobench2
    from scaffold.pipeline.geobench2 import plan_geobench2
    from scaffold.write.state import read_state

    tasks, _ = survey_geobench2(root, ("flair2", "pastis", "forestnet"))
    spec = read_state(cnn[0]).spec
    bands = ("RED", "GREEN", "BLUE", "NIR", "ELEVATION")
    mods = ("optical", "optical", "optical", "optical", "dem")
    planned = {p.task.name: p for p in plan_geobench2(tasks, spec, bands, mods)}
    # flair2 has both modalities (found by their bands); pastis's s2 has no NIR (B08 is
    # NIR_BROAD) and forestnet no elevation: a modality's input takes all of its bands
    assert sorted(planned) == ["flair2"]
    assert planned["flair2"].band_order == {
        "aerial": ["red", "green", "blue", "nir"],
        "elevation": ["elevation"],
    }
    assert planned["flair2"].modalities == {"aerial": "optical", "elevation": "dem"}
    assert planned["flair2"].bands == bands
    # a dataset with none of the model's modalities is left out, with the reason
    lines = []

    class Progress:
        def print(self, text, **_):
            lines.append(text)

    sar = plan_geobench2(tasks, spec, ("VV_ASC", "VH_ASC", "X"), ("s1", "s1", "x"), Progress())
    assert [p.task.name for p in sar] == ["pastis"]
    assert sar[0].band_order == {"s1_asc": ["VV_asc", "VH_asc"]}
    assert any(line.startswith("  flair2: left out: its modalities") for line in lines), lines


def test_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import scaffold.data.geobench2 as gb2

    monkeypatch.setitem(sys.modules, "geobench_v2", None)  # as if not installed
    with pytest.raises(gb2.ScaffoldError) as err:
        gb2.require()
    assert "pip install 'scaffold-backbone[geobench2]'" in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_dataset_and_datasets_without_geobench2_are_refused(root, tmp_path):
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "o"),
        "--geobench2", str(root), "--datasets", "flair3", "--no-verify",
    )  # fmt: skip
    assert done.returncode == 2
    assert "--datasets: flair3: not a geobenchv2 dataset" in done.stderr
    assert not (tmp_path / "o").exists()
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "o"),
        "--datasets", "flair2", "--no-verify",
    )  # fmt: skip
    assert done.returncode == 2 and "for --geobench2 ROOT" in done.stderr


def test_a_two_modality_model_receives_both_modalities(root, tmp_path):
    """A dict-forward model (`forward(x: dict)`) with its bands named per modality: the analysis
    feeds both (the image is them stacked, split by name), so nothing is left unfed and the
    ladder verifies with both; the task's batch is a dict by the model's names, and the
    backbone's features on it, and on the stacked image, equal the tensors hooks read on a
    plain model called with the dict by hand."""
    import torch

    out = tmp_path / "out"
    code, data = run_json(
        "new-backbone", f"{MODELS / 'modality_dict.py'}:ModalityDictEncoder",
        "--out", str(out), "--name", "gb2_md",
        "--geobench2", str(root), "--datasets", "pastis,flair2",
        "--bands", "S2L2A=B02,B03,B04,B08;S1GRD=VV_asc,VH_asc",
    )  # fmt: skip
    assert code == 0 and data["verified"] is True, data
    state = yaml.safe_load((out / ".scaffold" / "state.json").read_text())
    call = state["spec"]["forward_call"]
    # no --image-arg: the modalities are items of the forward's dict parameter x
    assert call["image"] == "x.S2L2A"
    assert call["modalities"] == [["S2L2A", 4], ["S1GRD", 2]]
    assert state["spec"]["input_shape"] == [1, 6, 64, 64] and not state["spec"]["doubts"]
    tasks = {t["name"]: t for t in yaml.safe_load((out / "benchmark.yaml").read_text())["tasks"]}
    assert sorted(tasks) == ["pastis"]  # flair2 has neither modality's bands in full
    args = tasks["pastis"]["datamodule"]["init_args"]
    assert args["band_order"] == {
        "s2": ["B02", "B03", "B04", "B08"],
        "s1_asc": ["VV_asc", "VH_asc"],
    }
    assert args["modalities"] == {"s2": "S2L2A", "s1_asc": "S1GRD"}
    batch = _batch(tasks["pastis"])
    shapes = {"S2L2A": (3, 4, 64, 64), "S1GRD": (3, 2, 64, 64)}
    assert {k: tuple(v.shape) for k, v in batch["image"].items()} == shapes
    backbone = generated_backbone(out, "gb2_md")
    seen: dict[str, tuple[int, ...]] = {}
    for name, module in backbone.model.embed.items():
        module.register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, tuple(i[0].shape))
        )
    # the truth: a plain model with the backbone's weights, called with the dict by hand
    plain = model_class("modality_dict", "ModalityDictEncoder")().eval()
    plain.load_state_dict(backbone.model.state_dict())
    truth: list[torch.Tensor] = []
    for block in plain.blocks:
        block.register_forward_hook(lambda m, i, o: truth.append(o))
    with torch.no_grad():
        plain(batch["image"])
        features = backbone(batch["image"])
        stacked = backbone(torch.cat([batch["image"]["S2L2A"], batch["image"]["S1GRD"]], 1))
    assert seen == shapes and len(features) == 2
    for got, again, want in zip(features, stacked, truth, strict=True):
        assert torch.equal(got, want) and torch.equal(again, want)
    # the S1 image changes the features: it is fed, not dropped
    with torch.no_grad():
        other = backbone({**batch["image"], "S1GRD": torch.zeros(3, 2, 64, 64)})
    assert not torch.allclose(other[-1], features[-1])


def test_a_modality_no_dataset_modality_holds_is_said_not_fed(root, tmp_path):
    """pastis holds the S2 bands but no VV_REAL/VH_REAL: the task feeds S2L2A alone, and the
    run and the YAML say that S1GRD is not fed."""
    out = tmp_path / "out"
    done = run_cli(
        "new-backbone", f"{MODELS / 'modality_dict.py'}:ModalityDictEncoder",
        "--out", str(out), "--name", "gb2_md1", "--geobench2", str(root), "--datasets", "pastis",
        "--bands", "S2L2A=B02,B03,B04,B08;S1GRD=VV_REAL,VH_REAL", "--no-verify",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "pastis: S1GRD not fed (no modality of the dataset holds all of its bands); the "
        "ladder's checks fed every modality" in " ".join(done.stderr.split())
    ), done.stderr
    text = (out / "benchmark.yaml").read_text()
    assert "# not fed (no dataset modality holds all its bands): S1GRD." in text
    (task,) = yaml.safe_load(text)["tasks"]
    assert task["datamodule"]["init_args"]["modalities"] == {"s2": "S2L2A"}


def test_update_replays_geobench2(cnn):
    out, _ = cnn
    done = run_cli("update", str(out), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "no file would change" in done.stderr


@pytest.mark.e2e
def test_the_benchmark_runs_every_task_in_the_ladder_and_standalone(cnn, tmp_path):
    out, _ = cnn
    code, data = run_json("verify", str(out))
    assert code == 0 and data["ok"] is True, data
    (bench,) = [c for c in data["checks"] if c["name"] == "benchmark"]
    for metric in (
        "pastis: best_val/mIoU",
        "flair2: best_val/mIoU",
        "forestnet: best_val/Accuracy_Micro",
    ):
        assert metric in bench["detail"], bench["detail"]
    # as a person runs it: a fresh process in another folder, where neither the generated
    # package nor anything the ladder imported is loaded before iterate reads the YAML
    (short,) = sorted(out.glob(".scaffold/runs/*/benchmark.short.yaml"))[-1:]
    done = subprocess.run(
        [sys.executable, "-m", "terratorch", "iterate", "--hpo", "--config", str(short)],
        cwd=tmp_path,
        env=clean_env() | {"MLFLOW_ALLOW_FILE_STORE": "true"},  # as the printed command sets it
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "No module named" not in done.stderr


def test_bands_per_modality_must_name_every_modality(root, tmp_path):
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "o"),
        "--geobench2", str(root), "--bands", "s2=B02,B03;VV", "--no-verify",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --bands: 'VV': name each modality and its bands (--bands 's2=B02,B03;s1=VV,VH')"
    )
    assert not (tmp_path / "o").exists()


def test_a_task_name_taken_by_geobench_v1_is_refused(root, tmp_path):
    """GEO-Bench v1's m-forestnet is a task `forestnet` too: GEO-Bench-2 tasks keep the
    leaderboard's names, so two tasks of one name are refused, naming both."""
    from .geobench_data import all_bands, write_geobench

    v1 = tmp_path / "v1"
    write_geobench(v1, "m-forestnet", all_bands("m-forestnet"), "pickle", num_classes=2)
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "o"),
        "--geobench", str(v1), "--geobench2", str(root), "--datasets", "forestnet",
        "--no-verify",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --geobench2: forestnet is also the name of a --data or --geobench task; "
        "GEO-Bench-2 tasks keep the leaderboard's names: leave it out with --datasets"
    )
    assert not (tmp_path / "o").exists()
