"""Bad input is one line, exit 2, naming the file or value, and nothing is written; a check
never says ok when the real run would fail. Each case as a person (or a killed process) leaves
it: names that shadow, broken values the verifying run's copy would hide, damaged datasets and
MLflow stores, moved data, hand-edited paths, leftovers of interrupted runs."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from scaffold.errors import ScaffoldError
from scaffold.pipeline.new_backbone import Options, generate

from .conftest import MODELS, SCAFFOLD, copy_model, run_cli
from .datasets import image, mask, write_tif
from .test_data import split_folders
from .test_safety import one_error_line, without_lock

HELPER = '''"""The building block, in a module of its own beside the model."""

from torch import nn


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())
'''

TWO_FILE_MODEL = '''"""A CNN whose blocks come from a module beside it."""

import torch
from helper import block
from torch import nn


class TwoFileNet(nn.Module):
    def __init__(self, in_chans: int = 4):
        super().__init__()
        self.stem = block(in_chans, 8, 2)
        self.stage1 = block(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stage1(self.stem(x))).flatten(1))
'''


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def nothing_but(folder: Path, *names: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


# -- names ---------------------------------------------------------------------------------------
def test_a_name_that_would_shadow_a_module_beside_the_model_is_refused(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "helper.py").write_text(HELPER)
    (models / "two_file_net.py").write_text(TWO_FILE_MODEL)
    done = run_cli(
        "new-backbone", str(models / "two_file_net.py"), "--name", "helper",
        "--out", str(tmp_path / "out"), "--no-verify",
    )  # fmt: skip
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert line.startswith("error: --name 'helper' is the name of a module in the model's folder")
    assert str(models) in line
    nothing_but(tmp_path, "models")
    nothing_but(models, "helper.py", "two_file_net.py")


def test_an_empty_folder_or_the_output_folder_beside_the_model_does_not_take_the_name(tmp_path):
    from scaffold.resolve.naming import choose_name

    models = tmp_path / "models"
    # A name of its own: the in-process analysis leaves the model's module imported.
    model = copy_model("cnn", models, new_name="cnn_beside_folders")
    (models / "my_net").mkdir()  # an empty folder: a namespace package with nothing in it
    generate(Options(str(model), {}, name="my_net", out=tmp_path / "out"))
    out = generate(Options(str(model), {}, name="my_net", out=models / "my_net")).out
    assert (out / "my_net" / "__init__.py").is_file()  # the output folder beside the model
    (models / "tools").mkdir()
    (models / "tools" / "blocks.py").write_text(HELPER)  # a namespace package with a module
    with pytest.raises(ScaffoldError, match="is the name of a module in the model's folder"):
        choose_name("tools", module="cnn_beside_folders", root=models, out=tmp_path / "elsewhere")


@pytest.mark.parametrize("name", ["data", "runs", "baselines", "splits"])
def test_names_of_the_folders_scaffold_writes_are_refused(tmp_path, name):
    with pytest.raises(ScaffoldError, match=rf"--name '{name}' is the name of a folder scaffold"):
        generate(Options(str(MODELS / "cnn.py"), {}, name=name, out=tmp_path / "out"))
    nothing_but(tmp_path)


# -- the verifying run's shortened copy ----------------------------------------------------------
def broken(config: Path, dest: Path, change) -> Path:
    """A copy of the benchmark YAML `config` at `dest`, with one value broken by `change`."""
    cfg = yaml.safe_load(config.read_text())
    change(cfg)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def _set(*path, value=None, drop=False):
    def change(cfg):
        node = cfg
        for key in path[:-1]:
            node = node[key]
        if drop:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return change


ARGS = ("tasks", 0, "datamodule", "init_args")
TRAINER = ("defaults", "trainer_args")
OVERRIDDEN = {
    "n_trials 0": (_set("n_trials", value=0), "n_trials: 0"),
    "n_trials missing": (_set("n_trials", drop=True), "n_trials: None"),
    "n_trials 2.5": (_set("n_trials", value=2.5), "n_trials: 2.5"),
    "num_workers -1": (
        _set(*ARGS, "num_workers", value=-1),
        "tasks[smoke].datamodule.init_args.num_workers: -1",
    ),
    "max_epochs missing": (
        _set(*TRAINER, "max_epochs", drop=True),
        "defaults.trainer_args.max_epochs: missing",
    ),
    "max_epochs text": (
        _set(*TRAINER, "max_epochs", value="ten"),
        "defaults.trainer_args.max_epochs: 'ten'",
    ),
    "limit_train_batches 1.5": (
        _set(*TRAINER, "limit_train_batches", value=1.5),
        "defaults.trainer_args.limit_train_batches: 1.5",
    ),
    "limit_val_batches 0": (
        _set(*TRAINER, "limit_val_batches", value=0),
        "defaults.trainer_args.limit_val_batches: 0",
    ),
    "max_epochs 0": (
        _set(*TRAINER, "max_epochs", value=0),
        "defaults.trainer_args.max_epochs: 0",
    ),
    "storage_uri missing": (_set("storage_uri", drop=True), "storage_uri: None"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(OVERRIDDEN))
def test_a_value_the_shortened_copy_replaces_is_checked_in_the_real_file(generated, tmp_path, case):
    from scaffold.verify.benchmark import run_benchmark
    from scaffold.verify.types import CheckFailed

    change, named = OVERRIDDEN[case]
    config = broken(generated["cnn"].benchmark_config, tmp_path / "benchmark.yaml", change)
    with pytest.raises(CheckFailed) as failed:
        run_benchmark(config, tmp_path / "log")
    message = str(failed.value)
    assert message.startswith(f"benchmark.yaml: {named}: ") and "\n" not in message
    if case.endswith(" 0") and "n_trials" not in case:  # Lightning accepts it, and does nothing
        verb = "validate" if "val" in case else "train"
        assert f"Lightning accepts it, but the real run would {verb} on nothing" in message
        assert "fail" not in message
    else:
        assert "the real run would fail on it" in message
    assert message.endswith("the verifying run's shortened copy replaces this value, so only "
                            "the real run would meet it")  # fmt: skip
    assert not (tmp_path / "log" / "hpo").exists()  # refused before the run


def test_a_benchmark_yaml_that_is_not_a_mapping_is_one_line_naming_it(tmp_path):
    from scaffold.verify.shorten import shortened_copy
    from scaffold.verify.types import CheckFailed

    config = tmp_path / "benchmark.yaml"
    config.write_text("- n_trials: 1\n- tasks: []\n")
    with pytest.raises(CheckFailed, match=r"^benchmark.yaml: holds a list, not a mapping"):
        shortened_copy(config, tmp_path / "log")


def test_enable_checkpointing_of_the_real_file_is_not_a_finding(generated):
    from scaffold.verify.shorten import overridden_problems

    # terratorch-iterate replaces it (with save_models) before the Trainer sees it
    cfg = yaml.safe_load(generated["cnn"].benchmark_config.read_text())
    cfg["defaults"]["trainer_args"]["enable_checkpointing"] = "yes"
    assert overridden_problems(cfg) == []


@pytest.mark.e2e
def test_the_shortened_copy_keeps_early_stopping_so_the_run_checks_it(generated, tmp_path):
    from scaffold.verify.benchmark import run_benchmark
    from scaffold.verify.shorten import shortened_copy
    from scaffold.verify.types import CheckFailed

    config = broken(
        generated["cnn"].benchmark_config,
        tmp_path / "benchmark.yaml",
        _set("tasks", 0, "early_stop_patience", value="ten"),
    )
    short = yaml.safe_load(shortened_copy(config, tmp_path).read_text())
    assert short["tasks"][0]["early_stop_patience"] == "ten"
    assert short["n_trials"] == 1 and short["defaults"]["trainer_args"]["max_epochs"] == 1
    with pytest.raises(CheckFailed, match="early_stop_patience"):
        run_benchmark(config, tmp_path / "log")


# -- report: NaN results, damaged MLflow stores, a copied folder ---------------------------------
@pytest.fixture()
def project(tmp_path, request):
    """A backbone generated (not verified) from a model file of its own."""
    name = f"ref_{request.node.name.split('[')[0].removeprefix('test_')}"[:40]
    model = copy_model("cnn", tmp_path / "models", new_name=name)
    return generate(Options(str(model), {}, name=f"{name}_bb", out=tmp_path / "out"))


def iterate_tags(out: Path) -> dict[str, str]:
    """The tags terratorch-iterate sets on a task's run when its search ends (backbone_benchmark.py:
    the backbone and decoder of the task's merged ``terratorch_task.model_args``, ...)."""
    config = yaml.safe_load((out / "benchmark.yaml").read_text())
    args = config["defaults"]["terratorch_task"]["model_args"]
    args = args | config["tasks"][0]["terratorch_task"]["model_args"]
    return {
        "backbone": str(args["backbone"]),
        "decoder": str(args["decoder"]),
        "task": "segmentation",
        "partition_name": "default",
        "early_stop_patience": "None",
        "n_trials": "1",
    }


def log_hpo(
    out: Path,
    experiment: str,
    values: list[float],
    task: str = "smoke",
    trials: int = 0,
    finished: bool = True,
    tags: dict[str, str] | None = None,
) -> list[str]:
    """HPO results as terratorch-iterate logs them, oldest first: a top-level run per
    benchmark, the task's run under it (its tags and ``best_val/loss`` once the search is
    done), and under that one run per trial (``val/loss``), started after the task's run.
    Unless `finished`, every run is left RUNNING, as during the search: no tags, no best.
    Returns the task runs' ids."""
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = MlflowClient(tracking_uri=str(out / "runs" / "hpo"))
    found = client.get_experiment_by_name(experiment)
    exp = found.experiment_id if found else client.create_experiment(experiment)
    ids = []
    earlier = len(client.search_runs([exp]))  # each call's runs start after the last call's
    for i, value in enumerate(values, earlier):
        start = 1_700_000_000_000 + 100_000 * i
        top = client.create_run(exp, run_name="benchmark", start_time=start)
        child = client.create_run(
            exp, run_name=task, start_time=start + 1, tags={"mlflow.parentRunId": top.info.run_id}
        )
        for t in range(trials):
            trial = client.create_run(
                exp,
                run_name=f"{task}_{t}",
                start_time=start + 2 + t,
                tags={"mlflow.parentRunId": child.info.run_id},
            )
            client.log_metric(trial.info.run_id, "val/loss", value + t)
            if finished or t < trials - 1:  # the last trial is still training
                client.set_terminated(trial.info.run_id)
        if finished:
            for key, tag in (iterate_tags(out) if tags is None else tags).items():
                client.set_tag(child.info.run_id, key, tag)
            client.log_metric(child.info.run_id, "best_val/loss", value)
            client.set_terminated(child.info.run_id)
            client.set_terminated(top.info.run_id)
        ids.append(child.info.run_id)
    return ids


def smoke_value(results) -> float | None:
    (row,) = results.tasks
    cell = row.cells[results.backbones[0].name]
    return None if cell is None else cell.mean


def test_report_says_that_the_newest_run_produced_nan(project, monkeypatch):
    from scaffold.results.collect import collect

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    _, newest = log_hpo(project.out, project.backbone, [0.4, float("nan")])
    results = collect(project.out)
    assert smoke_value(results) is None  # not the older run's 0.4
    assert results.notes == [
        (
            f"{project.backbone}: the newest run of 'smoke' (run {newest}) produced "
            "best_val/loss = nan; shown as missing"
        )
    ]


def test_report_says_that_a_single_run_produced_nan(project, monkeypatch):
    from scaffold.results.collect import collect

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    log_hpo(project.out, project.backbone, [float("nan")])
    results = collect(project.out)
    assert smoke_value(results) is None
    assert len(results.notes) == 1 and "produced best_val/loss = nan" in results.notes[0]


def test_report_reads_every_page_of_runs(project, monkeypatch):
    """More runs than one page of MLflow's search: the benchmark's top-level run, oldest,
    is on the last page, and its task's result still counts."""
    import scaffold.results.collect
    from scaffold.results.collect import collect

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setattr(scaffold.results.collect, "SEARCH_PAGE", 3)
    log_hpo(project.out, project.backbone, [0.4], trials=5)  # 7 runs: 3 pages
    results = collect(project.out)
    assert results.notes == []
    assert results.backbones[0].ran
    assert smoke_value(results) == pytest.approx(0.4)


def test_report_says_still_running_for_running_runs(project, monkeypatch):
    from scaffold.results.collect import collect

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (task_run,) = log_hpo(project.out, project.backbone, [0.4], trials=2, finished=False)
    results = collect(project.out)
    assert smoke_value(results) is None
    assert results.notes == [
        f"{project.backbone}: task 'smoke' is still running (run {task_run}); no result yet"
    ]
    report = results.to_dict()
    assert report["not_run"] == [] and report["running"] == ["benchmark.yaml"]


def test_report_ignores_runs_of_another_backbone(project, monkeypatch):
    """Another session wrote to the same store and experiment with another backbone: its
    newer, better run is not this output's result."""
    from scaffold.results.collect import collect

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    log_hpo(project.out, project.backbone, [0.4])
    other = iterate_tags(project.out) | {"backbone": "resnet18"}
    (theirs,) = log_hpo(project.out, project.backbone, [0.1], tags=other)
    results = collect(project.out)
    assert smoke_value(results) == pytest.approx(0.4)
    assert results.notes == [
        (
            f"{project.backbone}: run {theirs} of 'smoke' trained backbone 'resnet18', not "
            f"{project.backbone!r} as benchmark.yaml says: ignored"
        )
    ]

    # --repeat's seed runs record the task's model_args as params (Lightning's MLflow logger)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=str(project.out / "runs" / "hpo_repeated_exp"))
    exp = client.create_experiment(f"{project.backbone}_repeated_exp")
    seeds = {}
    for seed, value, tags in ((1, 0.5, iterate_tags(project.out)), (2, 0.05, other)):
        run = client.create_run(exp, run_name=f"smoke_{seed}", start_time=1_800_000_000_000 + seed)
        for key in ("backbone", "decoder"):
            client.log_param(run.info.run_id, f"model_args/{key}", tags[key])
        client.log_metric(run.info.run_id, "test_test/loss", value)
        client.set_terminated(run.info.run_id)
        seeds[seed] = run.info.run_id
    results = collect(project.out)
    (row,) = results.tasks
    assert row.source == "repeated" and row.cells[project.backbone].values == [0.5]
    assert results.notes[-2:] == [
        (
            f"{project.backbone}: seed run smoke_2 (run {seeds[2]}) trained backbone 'resnet18', not "
            f"{project.backbone!r} as benchmark.yaml says: ignored"
        ),
        f"{project.backbone}: task 'smoke' has 1 of the 5 seeds asked for (seeds 1)",
    ]


def _experiment_dir(out: Path) -> Path:
    store = out / "runs" / "hpo"
    (found,) = [p for p in store.iterdir() if p.name not in ("0", ".trash")]
    return found


def _damage(case: str, experiment: Path, newest: str) -> Path:
    """Damage the store as a crash or a hand edit does; returns the file (or folder) to name."""
    if case == "experiment meta.yaml not YAML":
        (experiment / "meta.yaml").write_text("name: [unclosed\n")
        return experiment / "meta.yaml"
    if case == "run meta.yaml without keys":
        (experiment / newest / "meta.yaml").write_text("status: 3\n")
        return experiment / newest / "meta.yaml"
    if case == "text in a metric file":
        path = experiment / newest / "metrics" / "best_val" / "loss"
        path.write_text("1700000001001 lots 0\n")
        return path
    assert case == "a stray folder"
    (experiment / "backup").mkdir()
    (experiment / "backup" / "notes.txt").write_text("mine")
    return experiment / "backup"


DAMAGE = [
    "experiment meta.yaml not YAML",
    "run meta.yaml without keys",
    "text in a metric file",
    "a stray folder",
]


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_mlflow_store_names_the_file_and_reports_the_rest(project, monkeypatch, case):
    from scaffold.results.collect import collect

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    _, newest = log_hpo(project.out, project.backbone, [0.4, 0.3])
    bad = _damage(case, _experiment_dir(project.out), newest)
    before = {p: p.read_bytes() for p in (project.out / "runs").rglob("*") if p.is_file()}
    results = collect(project.out)
    named = [n for n in results.notes if n.startswith(f"{bad}: ")]
    assert len(named) == 1 and named[0].endswith("; left out of the report"), results.notes
    if case == "experiment meta.yaml not YAML":
        assert smoke_value(results) is None  # the whole experiment is unreadable
    elif case == "a stray folder":
        assert smoke_value(results) == pytest.approx(0.3)
    else:  # the damaged newest run is left out, the intact one is read
        assert smoke_value(results) == pytest.approx(0.4)
    after = {p: p.read_bytes() for p in (project.out / "runs").rglob("*") if p.is_file()}
    assert after == before  # the report reads, never repairs


def test_report_of_a_damaged_store_is_one_note_per_file_and_no_traceback(project):
    log_hpo(project.out, project.backbone, [0.4])
    bad = _damage("a stray folder", _experiment_dir(project.out), "")
    done = run_cli("report", str(project.out))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"{bad}: a stray folder (no meta.yaml): not an MLflow run; left out of the report"
    ]


def test_mlflow_registered_models_folder_is_not_a_stray_folder(project, monkeypatch):
    from mlflow.tracking import MlflowClient

    from scaffold.results.collect import collect

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    log_hpo(project.out, project.backbone, [0.4])
    store = str(project.out / "runs" / "hpo")
    MlflowClient(tracking_uri=store, registry_uri=store).create_registered_model("kept_model")
    assert (project.out / "runs" / "hpo" / "models").is_dir()  # MLflow's, at the store's root
    results = collect(project.out)
    assert results.notes == []
    assert smoke_value(results) == pytest.approx(0.4)


def test_an_interrupted_report_leaves_no_temporary_view(project, monkeypatch, tmp_path):
    import scaffold.results.collect
    from scaffold.results.collect import collect

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    log_hpo(project.out, project.backbone, [0.4])
    _damage("a stray folder", _experiment_dir(project.out), "")  # read through a view
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scaffold.results.collect, "_repeated_cells", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        collect(project.out)
    assert list((tmp_path / "temp").iterdir()) == []


def test_report_of_a_copied_folder_reads_the_copys_own_results(project, tmp_path, monkeypatch):
    from scaffold.results.collect import collect

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    log_hpo(project.out, project.backbone, [0.4])
    copy = tmp_path / "copy"
    shutil.copytree(project.out, copy, symlinks=True)
    # storage_uri is relative to the folder: the copy's results are its own from now on.
    log_hpo(copy, project.backbone, [0.3])
    results = collect(copy)
    assert smoke_value(results) == pytest.approx(0.3) and results.notes == []
    assert smoke_value(collect(project.out)) == pytest.approx(0.4)


def test_a_hand_edited_custom_modules_path_is_named_as_edited(project, tmp_path):
    from scaffold.verify.ladder import verify_dir

    elsewhere = tmp_path / "elsewhere" / "pkg"
    shutil.copytree(project.package, elsewhere)
    config = project.benchmark_config
    config.write_text(
        config.read_text().replace(
            f"custom_modules_path: {project.package.name}", f"custom_modules_path: {elsewhere}"
        )
    )
    report = verify_dir(project.out, quick=True)
    folder = next(c for c in report.checks if c.name == "folder")
    assert not folder.ok
    assert folder.detail == (
        f"custom_modules_path {elsewhere} in benchmark.yaml is not this folder's package: it "
        f"was edited; set it back to {project.package.name} (relative to the folder)"
    )


# -- damaged datasets ----------------------------------------------------------------------------
def truncate(path: Path) -> Path:
    """Cut the file short, as a copy that did not finish leaves it: the header still reads."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "rel",
    [
        "train/images/tile1_img.tif",
        "val/images/tile0_img.tif",
        "test/labels/tile1_mask.tif",
        "train/labels/tile0_mask.tif",
    ],
)
def test_a_truncated_image_or_label_is_named(tmp_path, rel):
    from scaffold.data.survey import survey

    split_folders(tmp_path / "ds")
    bad = truncate(tmp_path / "ds" / rel)
    with pytest.raises(ScaffoldError) as refused:
        survey(tmp_path / "ds")
    assert str(refused.value).startswith(f"{bad}: rasterio cannot read its pixels (")
    assert str(refused.value).endswith("is the file truncated or damaged?")


def test_a_read_error_without_a_message_is_still_one_line():
    from rasterio.errors import RasterioIOError

    from scaffold.data.read import _unreadable

    error = _unreadable(Path("/d/a.tif"), RasterioIOError(""))  # GDAL gives no reason at times
    assert str(error) == (
        "/d/a.tif: rasterio cannot read its pixels (RasterioIOError); is the file truncated or "
        "damaged?"
    )


def test_a_truncated_training_image_is_one_line_exit_2_and_nothing_written(tmp_path):
    split_folders(tmp_path / "ds")
    bad = truncate(tmp_path / "ds" / "train" / "images" / "tile2_img.tif")
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
        "--data", str(tmp_path / "ds"), "--no-verify",
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: {bad}: rasterio cannot read its pixels")
    nothing_but(tmp_path, "ds")


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_broken_symbolic_link_in_a_dataset_is_named(tmp_path, kind):
    from scaffold.data import survey_all

    split_folders(tmp_path / "ds")
    link = tmp_path / "ds" / "train" / "images" / "tile9_img.tif"
    if kind == "dangling":
        link.symlink_to(tmp_path / "gone.tif")
        why = f"{link} is a symbolic link to {tmp_path / 'gone.tif'}, which does not exist"
    else:
        other = link.with_name("tile8_img.tif")
        link.symlink_to(other)
        other.symlink_to(link)
        why = f"{other} is a symbolic link in a loop (-> {link})"
    with pytest.raises(ScaffoldError) as refused:
        survey_all([str(tmp_path / "ds")])
    assert str(refused.value) == f"--data {tmp_path / 'ds'}: {why}"


def test_a_dangling_link_in_a_recorded_dataset_is_named_by_update(tmp_path):
    from scaffold.pipeline.update import update_dir

    split_folders(tmp_path / "ds")
    out = tmp_path / "out"
    generate(Options(str(MODELS / "cnn.py"), {}, out=out, data=(str(tmp_path / "ds"),)))
    link = tmp_path / "ds" / "val" / "images" / "tile5_img.tif"
    link.symlink_to(tmp_path / "gone.tif")
    before = files_of(out)
    with pytest.raises(ScaffoldError, match=f"{link} is a symbolic link to .*which does not exist"):
        update_dir(out)
    assert without_lock(files_of(out)) == before


def as_another_user(function) -> str | None:
    """Run `function` in a child process as the unprivileged user 'nobody' (root reads every
    file whatever its mode); return the ScaffoldError message it raised, or None."""
    if os.geteuid() != 0:
        try:
            function()
        except ScaffoldError as exc:
            return str(exc)
        return None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, report, leave without cleanup
        os.close(read)
        message = b""
        try:
            os.setgid(65534)
            os.setuid(65534)
            function()
        except ScaffoldError as exc:
            message = b"E" + str(exc).encode()
        except BaseException as exc:  # reported to the parent as it is
            message = b"X" + f"{type(exc).__name__}: {exc}".encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    assert not message.startswith("X"), message
    return message[1:] or None


@pytest.fixture()
def shared_tmp():
    """A folder every user may enter (pytest's tmp_path is the owner's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="scaffold-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_unreadable_split_folder_is_named(shared_tmp):
    from scaffold.data.survey import survey

    split_folders(shared_tmp / "ds")
    for path in (shared_tmp / "ds").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (shared_tmp / "ds").chmod(0o755)
    locked_out = shared_tmp / "ds" / "val" / "labels"
    locked_out.chmod(0o000)
    message = as_another_user(lambda: survey(shared_tmp / "ds"))
    assert message == f"--data {shared_tmp / 'ds'}: cannot list {locked_out} (Permission denied)"


@pytest.mark.parametrize("case", ["float32 among uint16", "nodata on one", "a PNG named .tif"])
def test_images_that_disagree_are_refused_naming_two_files(tmp_path, case):
    from scaffold.data.survey import survey

    split_folders(tmp_path / "ds")
    odd = tmp_path / "ds" / "val" / "images" / "tile1_img.tif"
    img = image(np.random.default_rng(7), bands=3)
    odd.unlink()
    if case == "float32 among uint16":
        write_tif(odd, img.astype(np.float32))
        what = "data types differ: train/images/tile0_img.tif has uint16, "
        what += "val/images/tile1_img.tif has float32"
    elif case == "nodata on one":
        write_tif(odd, img, nodata=7)
        what = "nodata values differ: train/images/tile0_img.tif has None, "
        what += "val/images/tile1_img.tif has 7.0"
    else:
        import rasterio

        with rasterio.open(
            odd, "w", driver="PNG", height=32, width=32, count=3, dtype="uint16"
        ) as dst:
            dst.write(img)
        what = "file formats differ: train/images/tile0_img.tif has GTiff, "
        what += "val/images/tile1_img.tif has PNG"
    with pytest.raises(ScaffoldError) as refused:
        survey(tmp_path / "ds")
    assert str(refused.value) == f"{what} (every image must agree)"


# -- a recorded dataset that moved ---------------------------------------------------------------
def test_a_moved_dataset_is_named_with_how_to_repoint_or_drop_it(tmp_path):
    from scaffold.pipeline.update import update_dir
    from scaffold.write.state import read_state

    old = tmp_path / "a" / "parcels"
    split_folders(old)
    split_folders(tmp_path / "scenes")
    out = tmp_path / "out"
    generate(
        Options(str(MODELS / "cnn.py"), {}, out=out, data=(str(old), str(tmp_path / "scenes")))
    )
    new = tmp_path / "b" / "parcels"
    new.parent.mkdir()
    old.rename(new)
    before = files_of(out)
    done = run_cli("update", str(out), "--no-verify")
    assert done.returncode == 2
    assert one_error_line(done.stderr) == (
        f"error: --data {old} (recorded): no such directory; if it moved, run `scaffold update "
        f"{out} --drop-data {old} --data NEW_PATH`; to stop benchmarking it, `scaffold update "
        f"{out} --drop-data {old}`"
    )
    assert without_lock(files_of(out)) == before

    # re-pointed: the task keeps its name and its place, its paths follow the folder
    update_dir(out, data=(str(new),), drop_data=(str(old),))
    assert read_state(out).options.data == (str(new), str(tmp_path / "scenes"))
    tasks = yaml.safe_load((out / "benchmark.yaml").read_text())["tasks"]
    assert [t["name"] for t in tasks] == ["parcels", "scenes"]
    args = tasks[0]["datamodule"]["init_args"]
    assert args["train_data_root"] == str(new / "train" / "images")

    # dropped: the task goes, the other stays
    update_dir(out, drop_data=(str(tmp_path / "scenes"),))
    assert read_state(out).options.data == (str(new),)
    tasks = yaml.safe_load((out / "benchmark.yaml").read_text())["tasks"]
    assert [t["name"] for t in tasks] == ["parcels"]
    with pytest.raises(ScaffoldError, match=r"--drop-data /nowhere: not a recorded dataset"):
        update_dir(out, drop_data=("/nowhere",))


def test_dropping_the_last_dataset_brings_back_the_smoke_task_and_its_data(tmp_path):
    from scaffold.pipeline.update import update_dir

    split_folders(tmp_path / "parcels")
    out = tmp_path / "out"
    generate(Options(str(MODELS / "cnn.py"), {}, out=out, data=(str(tmp_path / "parcels"),)))
    assert not (out / "data").exists()
    update_dir(out, drop_data=(str(tmp_path / "parcels"),))
    (task,) = yaml.safe_load((out / "benchmark.yaml").read_text())["tasks"]
    assert task["name"] == "smoke"
    root = out / task["datamodule"]["init_args"]["train_data_root"]  # relative to the folder
    assert root.is_relative_to(out / "data") and len(list(root.glob("*.tif"))) == 8


# -- leftovers of killed runs --------------------------------------------------------------------
def killed_while_writing(code: str) -> str:
    """Run `code` (which prints a line when it is mid-write) in a fresh process and kill -9 it
    there: what it leaves is what a run killed at that point leaves. Returns the line."""
    process = subprocess.Popen(
        [sys.executable, "-c", code + "\nimport time; time.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline().strip()
    process.kill()
    process.wait()
    return line


def test_a_killed_new_backbone_leaves_a_temp_folder_that_the_next_run_removes(tmp_path):
    out = tmp_path / "out"
    left = Path(
        killed_while_writing(
            "from pathlib import Path; from scaffold.write.folder import new_temp\n"
            f"tmp, _ = new_temp(Path({str(out)!r}), inside=False)\n"
            "(tmp / 'benchmark.yaml').write_text('half')\n"
            "print(tmp, flush=True)"
        )
    )
    assert left.parent == tmp_path and left.is_dir()
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert f"removed {left}, left by an interrupted scaffold run" in done.stderr
    nothing_but(tmp_path, "out")


def test_a_temp_folder_a_live_run_holds_is_left_alone(tmp_path):
    from scaffold.write.folder import new_temp, remove_leftovers

    out = tmp_path / "out"
    mine, fd = new_temp(out, inside=False)  # a run working right now
    try:
        assert remove_leftovers(out) == []
        assert mine.is_dir()
    finally:
        os.close(fd)
    assert remove_leftovers(out) == [mine]  # its process gone: a leftover


def test_a_refused_run_leaves_the_leftovers_of_a_killed_one_alone(tmp_path):
    from scaffold.write.folder import new_temp

    out = tmp_path / "out"
    left, fd = new_temp(out, inside=False)
    os.close(fd)  # its run killed: a leftover the next run that goes ahead removes
    with pytest.raises(ScaffoldError, match="--name 'data' is the name of a folder"):
        generate(Options(str(MODELS / "cnn.py"), {}, name="data", out=out))
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="not empty and not made by scaffold"):
        generate(Options(str(MODELS / "cnn.py"), {}, name="left_cnn", out=out))
    nothing_but(tmp_path, "out", left.name)
    nothing_but(out, "notes.txt")


def test_a_temp_folder_of_an_older_version_is_reported_and_kept(tmp_path):
    from rich.console import Console

    out = tmp_path / "out"
    older = tmp_path / ".out.k2j_9x0q"  # mkdtemp's name, as older versions left it
    (older / ".scaffold").mkdir(parents=True)
    (older / "benchmark.yaml").write_text("half")
    mine = tmp_path / ".out.20241201"  # a person's folder: no state of scaffold's in it
    mine.mkdir()
    console = Console(record=True, width=300)
    generate(Options(str(MODELS / "cnn.py"), {}, name="older_cnn", out=out), progress=console)
    lines = console.export_text().splitlines()
    assert f"{older} looks left by an interrupted run of an older scaffold; remove it if no " \
        f"scaffold run is writing {out}" in lines  # fmt: skip
    assert not any(str(mine) in line for line in lines)
    assert (older / "benchmark.yaml").read_text() == "half"
    nothing_but(tmp_path, "out", older.name, mine.name)


def test_a_killed_run_into_an_empty_out_does_not_block_the_next(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    killed_while_writing(
        "from pathlib import Path; from scaffold.write.folder import new_temp\n"
        f"tmp, _ = new_temp(Path({str(out)!r}), inside=True)\n"
        "print(tmp, flush=True)"
    )
    assert len(list(out.iterdir())) == 1
    result = generate(Options(str(MODELS / "cnn.py"), {}, name="refill_cnn", out=out))
    assert sorted(p.name for p in out.iterdir()) == [
        ".scaffold", "benchmark.yaml", "data", "fit", "pyproject.toml", "refill_cnn"
    ]  # fmt: skip
    assert result.benchmark_config.is_file()


def test_a_killed_update_leaves_temp_files_that_the_next_update_removes(project):
    from rich.console import Console

    from scaffold.pipeline.update import update_dir

    out = project.out
    left = killed_while_writing(
        "import tempfile\n"
        f"data = tempfile.mkdtemp(prefix='.data-new.', dir={str(out)!r})\n"
        "open(data + '/s0_img.tif', 'wb').write(b'half')\n"
        "from scaffold.write.names import WRITE_TEMP_SUFFIX as tmp\n"
        f"fd, half = tempfile.mkstemp(prefix='.benchmark.yaml.', suffix=tmp, dir={str(out)!r})\n"
        f"fd, state = tempfile.mkstemp('.state.json.', suffix=tmp, dir={str(out / '.scaffold')!r})\n"
        "print(data, half, state, flush=True)"
    ).split()
    # a person's hidden backups that only look alike (mkstemp's 8 characters, even)
    mine = [out / ".benchmark.yaml.mine", out / ".benchmark.yaml.20241201"]
    mine += [out / ".pyproject.toml.original", out / ".scaffold" / ".state.json.original"]
    for path in mine:
        path.write_text("keep")
    console = Console(record=True, width=300)
    update_dir(out, dry_run=True, progress=console)
    assert all(Path(p).exists() for p in left)
    update_dir(out, progress=console)
    text = console.export_text()
    for path in left:
        assert not Path(path).exists()
        assert f"would remove {path}, left by an interrupted scaffold run" in text
        assert f"removed {path}, left by an interrupted scaffold run" in text
    assert all(path.read_text() == "keep" for path in mine)


# -- held: what the first round fixed, and what always worked ------------------------------------
def _zero_byte(root: Path) -> Path:
    path = root / "train" / "images" / "tile1_img.tif"
    path.write_bytes(b"")
    return path


def _text(root: Path) -> Path:
    path = root / "val" / "images" / "tile1_img.tif"
    path.write_text("not an image\n")
    return path


def _all_nodata(root: Path) -> Path:
    for path in root.rglob("*_img.tif"):
        write_tif(path, np.full((3, 32, 32), 9, np.uint16), nodata=9)
    return root


def _png(root: Path) -> Path:
    import rasterio

    shutil.rmtree(root)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(3):
            img = image(rng, 3)
            for folder, array, suffix in (
                ("images", img, "img"),
                ("labels", mask(img)[None], "mask"),
            ):
                path = root / split / folder / f"t{i}_{suffix}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                profile = {"height": 32, "width": 32, "count": len(array), "dtype": array.dtype}
                with rasterio.open(path, "w", driver="PNG", **profile) as dst:
                    dst.write(array)
    return root / "train"


def _band_per_file(root: Path) -> Path:
    shutil.rmtree(root)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(3):
            img = image(rng, 3)
            for b in range(3):
                write_tif(root / split / "images" / f"t{i}_B0{b + 1}.tif", img[b])
            write_tif(root / split / "labels" / f"t{i}_mask.tif", mask(img))
    return root


REFUSED = {
    "zero-byte image": (_zero_byte, "{bad}: rasterio cannot read it (RasterioIOError: "),
    "text named .tif": (_text, "{bad}: rasterio cannot read it (RasterioIOError: "),
    "all-nodata images": (_all_nodata, "band(s) [1, 2, 3] hold no valid pixel in the training"),
    "a PNG dataset": (_png, "{bad}: no images (*.tif, *.tiff) in the train split"),
    "one band per file": (_band_per_file, "train: images and labels do not pair by name"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_held_bad_datasets_are_refused_in_one_line(tmp_path, case):
    from scaffold.data.survey import survey

    prepare, expected = REFUSED[case]
    split_folders(tmp_path / "ds")
    bad = prepare(tmp_path / "ds")
    with pytest.raises(ScaffoldError) as refused:
        survey(tmp_path / "ds")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(expected.format(bad=bad)), message


def test_held_an_unreadable_file_is_named(shared_tmp):
    from scaffold.data.survey import survey

    split_folders(shared_tmp / "ds")
    for path in [shared_tmp / "ds", *(shared_tmp / "ds").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    bad = shared_tmp / "ds" / "test" / "images" / "tile0_img.tif"
    bad.chmod(0o000)
    message = as_another_user(lambda: survey(shared_tmp / "ds"))
    assert message is not None and message.startswith(f"{bad}: rasterio cannot read it (")


def _other_crs(root: Path) -> None:
    import rasterio
    from rasterio.crs import CRS

    for i, path in enumerate(sorted(root.rglob("*_img.tif"))):
        with rasterio.open(path, "r+") as dst:
            dst.crs = CRS.from_epsg(32633 if i % 2 else 4326)


def _tiles(size: int, bands: int, per_split: int):
    def prepare(root: Path) -> None:
        shutil.rmtree(root)
        rng = np.random.default_rng(0)
        for split in ("train", "val", "test"):
            for i in range(per_split):
                img = image(rng, bands, size=size)
                write_tif(root / split / "images" / f"t{i}_img.tif", img)
                label = mask(img) if size > 1 else np.array([[i % 2]], np.uint8)
                write_tif(root / split / "labels" / f"t{i}_mask.tif", label)

    return prepare


def _nan_labels(root: Path) -> None:
    shutil.rmtree(root)
    rng = np.random.default_rng(0)
    for i in range(10):
        img = image(rng, 3, dtype=np.float32)
        write_tif(root / "inputs" / f"f{i}.tif", img)
        target = (img[0] / 100).astype(np.float32)
        target[0, 0] = np.nan
        write_tif(root / "targets" / f"f{i}.tif", target)


def _symlinked(root: Path) -> None:
    real = root.parent / "real"
    for path in sorted((root / "train" / "images").glob("*.tif")):
        (real / path.name).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, real / path.name)
        path.symlink_to(real / path.name)


ACCEPTED = {
    "CRS that differ": (_other_crs, ("segmentation", 3, (32, 32))),
    "1x1 tiles": (_tiles(1, 3, 3), ("segmentation", 3, (1, 1))),
    "a single sample per split": (_tiles(32, 3, 1), ("segmentation", 3, (32, 32))),
    "200 bands": (_tiles(8, 200, 2), ("segmentation", 200, (8, 8))),
    "NaN in float labels": (_nan_labels, ("regression", 3, (32, 32))),
    "symlinked files": (_symlinked, ("segmentation", 3, (32, 32))),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_held_unusual_but_good_datasets_are_accepted(tmp_path, case):
    from scaffold.data.survey import survey

    prepare, (task, bands, size) = ACCEPTED[case]
    root = tmp_path / "a folder with spaces ünï" / "ds"
    split_folders(root)
    prepare(root)
    ds = survey(root)
    assert (ds.task, ds.bands, ds.size) == (task, bands, size)
    assert all(np.isfinite(ds.means)) and all(s >= 0 for s in ds.stds)


def test_held_a_truncated_state_is_one_line(project):
    state = project.out / ".scaffold" / "state.json"
    state.write_text(state.read_text()[:200])
    done = run_cli("update", str(project.out), "--no-verify")
    assert done.returncode == 2
    assert one_error_line(done.stderr).startswith(f"error: {state}: unreadable scaffold state (")


def test_held_python_tags_are_never_loaded(project, tmp_path):
    from scaffold.results.collect import collect

    witness = tmp_path / "ran"
    tag = f"!!python/object/apply:os.system ['touch {witness}']"
    done = run_cli("inspect", str(MODELS / "cnn.py"), "--arg", f"width={tag}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    config = project.benchmark_config
    config.write_text(config.read_text() + f"run_repetitions: {tag}\n")
    notes = collect(project.out).notes
    assert len(notes) == 1 and notes[0].startswith(f"{config}: not valid YAML")
    assert not witness.exists()


def test_held_three_parallel_runs_into_one_out_leave_one_backbone(tmp_path):
    out = tmp_path / "out"
    command = [SCAFFOLD, "new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--no-verify"]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(run.wait(), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2, 2], results
    for code, stderr in results:
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        if code == 2:
            assert errors == [
                (
                    f"error: --out {out}: another scaffold run wrote it meanwhile; run `scaffold "
                    f"update {out}` to regenerate it"
                )
            ] or errors[0].startswith(f"error: --out {out}: already holds a generated backbone")
    nothing_but(tmp_path, "out")
    assert (out / ".scaffold" / "state.json").is_file()


def test_a_nan_training_loss_fails_the_benchmark_though_the_metric_is_finite(tmp_path, monkeypatch):
    """A NaN loss trains nothing, yet argmax of NaN logits gives an accuracy: the benchmark
    check reads every logged value of the run's task and trial runs, not only the best metric."""
    from mlflow.tracking import MlflowClient

    from scaffold.verify.benchmark import checked_results, read_metrics
    from scaffold.verify.types import CheckFailed

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store, config = tmp_path / "hpo", tmp_path / "benchmark.short.yaml"
    config.write_text(yaml.safe_dump({"storage_uri": str(store), "experiment_name": "bench"}))
    client = MlflowClient(tracking_uri=str(store))
    exp = client.create_experiment("bench")
    start = 1_700_000_000_000
    # As terratorch-iterate logs a run: the benchmark, a task under it, a trial under that.
    top = client.create_run(exp, run_name="bench", start_time=start).info.run_id
    parent = {"mlflow.parentRunId": top}
    task = client.create_run(exp, run_name="eurosat", start_time=start + 1, tags=parent)
    parent = {"mlflow.parentRunId": task.info.run_id}
    trial = client.create_run(exp, run_name="trial_0", start_time=start + 2, tags=parent)
    trial_id, task_id = trial.info.run_id, task.info.run_id
    client.log_metric(trial_id, "train/loss", float("nan"), step=0)
    client.log_metric(trial_id, "train/loss", 0.7, step=1)  # the last value alone is finite
    client.log_metric(trial_id, "val/Accuracy", 0.5, step=1)
    client.log_metric(task_id, "best_val/Accuracy", 0.5)
    assert read_metrics(config, start) == {"eurosat: best_val/Accuracy": 0.5}  # all finite
    with pytest.raises(CheckFailed, match=r"not finite: trial_0: train/loss = nan at step 0"):
        checked_results(config, start, tmp_path / "iterate.log")


def _odd(path: Path, name: bytes) -> str:
    """`path`/`name`, where `name` holds a byte that is not UTF-8, as Python's argv holds it."""
    return os.fsdecode(os.fsencode(path) + b"/" + name)


def test_an_out_that_is_not_utf8_is_one_line_exit_2(tmp_path):
    out = _odd(tmp_path, b"out\xff")
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", out, "--no-verify")
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --out ") and "out\\xff: " in line, done.stderr
    assert "not UTF-8" in line and not os.path.exists(out)


def test_a_dataset_file_name_that_is_not_utf8_is_one_line_exit_2(tmp_path):
    split_folders(tmp_path / "tiles")
    image = tmp_path / "tiles" / "val" / "images" / "tile1_img.tif"
    os.rename(image, _odd(image.parent, b"tile1\xe9_img.tif"))  # Latin-1, not UTF-8
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(tmp_path / "out"),
                   "--data", str(tmp_path / "tiles"), "--no-verify")  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --data ") and "val/images/tile1\\xe9_img.tif" in line
    assert "not UTF-8" in line and not (tmp_path / "out").exists()


def test_a_run_filling_an_empty_out_that_another_run_filled_meanwhile_replaces_nothing(tmp_path):
    """The race the three parallel runs can hit: a run renders inside an `out` that was empty
    when it looked, and another run's backbone lands there first. Moving up then refuses,
    naming the other run, and leaves every file of that backbone as it was."""
    from scaffold.write.folder import move_entries_up, new_temp

    out = tmp_path / "out"
    generate(Options(str(MODELS / "cnn.py"), {}, out=out))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    tmp, lock = new_temp(out, inside=True)  # the late run's folder, rendered in
    try:
        for name in ("benchmark.yaml", "README.md"):
            (tmp / name).write_text("the late run's\n")
        (tmp / ".scaffold").mkdir()
        with pytest.raises(OSError) as raised:
            move_entries_up(tmp)
        assert raised.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    finally:
        os.close(lock)
        shutil.rmtree(tmp, ignore_errors=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_model_whose_forward_refuses_a_square_series_is_one_line_not_an_internal_error():
    """As many channels as frames (4 and 4): only the channels-first order is traced; when it
    fails, the other order was never run and cannot be taken as the one that ran."""
    done = run_cli("inspect", f"{MODELS / 'modality_dict.py'}:ModalityDictEncoder")
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert line.startswith("error: ModalityDictEncoder: forward raised on an input of shape")
