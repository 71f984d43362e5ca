"""The files each runner reads, checked as that runner meets them: `fit/<task>.yaml` as
`terratorch fit` builds it and feeds it a batch, and each runner's storage as it creates it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from scaffold.pipeline.new_backbone import Options, generate
from scaffold.verify.types import CheckFailed

from .conftest import copy_model


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A CNN backbone (4 bands, the smoke task's 4x64x64 GeoTIFFs), generated, not verified,
    from a model file of its own (its package name is this module's alone)."""
    root = tmp_path_factory.mktemp("runner")
    model = copy_model("cnn", root / "models", new_name="runner_cnn")
    return generate(Options(str(model), {}, name="runner_cnn_bb", out=root / "out", iterate2=True))


def edited_fit(made, where: Path, change) -> Path:
    """The smoke task's fit config, changed by `change(config)`, in a copy of the output folder
    under `where` (its paths are relative to the folder)."""
    folder = where / "out"
    shutil.copytree(made.out, folder, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    dest = folder / "fit" / "smoke.yaml"
    config = yaml.safe_load(dest.read_text())
    change(config)
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def test_the_fit_config_as_generated_builds_and_takes_one_batch(made):
    from scaffold.verify.fit import check_fit_file

    detail = check_fit_file(made.out / "fit" / "smoke.yaml")
    # the smoke task's batch size is 4; its GeoTIFFs have 4 bands of 64x64
    assert detail == "one training batch (image 4x4x64x64) through the task's model"


def test_a_custom_modules_path_that_does_not_exist_is_a_finding(made, tmp_path):
    from scaffold.verify.fit import check_fit_file

    def change(config):
        config["custom_modules_path"] = "/nonexistent"

    path = edited_fit(made, tmp_path, change)
    with pytest.raises(CheckFailed) as failed:
        check_fit_file(path)
    assert str(failed.value) == (
        f"{path}: custom_modules_path: /nonexistent is not a folder: terratorch fit stops on it"
    )


def test_a_channel_count_the_data_does_not_have_is_a_finding(made, tmp_path):
    from scaffold.verify.fit import check_fit_file

    def change(config):
        config["model"]["init_args"]["model_args"]["backbone_in_chans"] = 3

    path = edited_fit(made, tmp_path, change)
    with pytest.raises(CheckFailed) as failed:
        check_fit_file(path)
    assert str(failed.value).startswith(
        f"{path}: model.init_args.model_args.backbone_in_chans is 3, but the data's training "
        "batch has 4 channels (image 4x4x64x64)"
    )


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("max_epochs", ("trainer.max_epochs: 0: Lightning accepts it, but the real run would "
                       "train on nothing")),
        ("limit_train_batches", ("trainer.limit_train_batches: 0: Lightning accepts it, but the "
                                "real run would train on nothing")),
    ],
)  # fmt: skip
def test_a_fit_config_that_trains_on_nothing_is_a_finding(made, tmp_path, key, named):
    from scaffold.verify.fit import check_fit_file

    def change(config):
        config["trainer"][key] = 0

    path = edited_fit(made, tmp_path, change)
    with pytest.raises(CheckFailed) as failed:
        check_fit_file(path)
    assert str(failed.value) == f"{path}: {named}"


def test_storage_under_a_regular_file_is_a_finding_for_each_runner(made, tmp_path):
    from scaffold.verify.benchmark import run_benchmark
    from scaffold.verify.fit import check_fit_file
    from scaffold.verify.iterate2 import check_iterate2

    afile = tmp_path / "somefile"
    afile.write_text("not a folder")

    # benchmark.yaml: refused before the run, nothing written under the file
    config = yaml.safe_load(made.benchmark_config.read_text())
    config["storage_uri"] = str(afile / "mlruns")
    bench = tmp_path / "bench" / "benchmark.yaml"
    bench.parent.mkdir()
    bench.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(CheckFailed) as failed:
        run_benchmark(bench, tmp_path / "log")
    assert str(failed.value).startswith(
        f"benchmark.yaml: storage_uri: {afile / 'mlruns'}: {afile} is a file, not a folder: "
        "the real run cannot create its folders there"
    )
    assert not (tmp_path / "log" / "hpo").exists()

    # a fit config's trainer.default_root_dir (Lightning's logs and checkpoints)
    def change(config):
        config["trainer"]["default_root_dir"] = str(afile / "fit")

    path = edited_fit(made, tmp_path, change)
    with pytest.raises(CheckFailed) as failed:
        check_fit_file(path)
    assert str(failed.value) == (
        f"{path}: trainer.default_root_dir: {afile / 'fit'}: {afile} is a file, not a folder: "
        "the real run cannot create its folders there"
    )

    # iterate2's Optuna storage and trial folders, under runs/ of the output: a file here
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy2(made.out / "benchmark.yaml", copy / "benchmark.yaml")
    shutil.copytree(made.out / "iterate2", copy / "iterate2")
    (copy / "runs").write_text("not a folder")
    with pytest.raises(CheckFailed) as failed:
        check_iterate2(copy, tmp_path / "log2")
    assert str(failed.value).startswith(
        f"--optuna-db-path: sqlite:///{copy / 'runs' / 'iterate2' / 'optuna.db'}: "
        f"{copy / 'runs'} is a file, not a folder: the real run cannot create its folders there"
    )
    assert not (tmp_path / "log2" / "iterate2").exists()  # refused before any trial
