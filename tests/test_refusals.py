"""Bad input is one line, exit 2, naming the file or value, and nothing is written; a check
never says ok when the real run would fail. Each case as a person (or a killed process) leaves
it: names that shadow, broken values the verifying run's copy would hide, damaged datasets and
MLflow stores, moved data, hand-edited paths, leftovers of interrupted runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scaffold.errors import ScaffoldError
from scaffold.generate import Options, generate

from .conftest import MODELS, run_cli
from .test_safety import one_error_line

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
    "storage_uri missing": (_set("storage_uri", drop=True), "storage_uri: None"),
}


@pytest.mark.parametrize("case", list(OVERRIDDEN))
def test_a_value_the_shortened_copy_replaces_is_checked_in_the_real_file(generated, tmp_path, case):
    from scaffold.verify import CheckFailed
    from scaffold.verify.benchmark import run_benchmark

    change, named = OVERRIDDEN[case]
    config = broken(generated["cnn"].benchmark_config, tmp_path / "benchmark.yaml", change)
    with pytest.raises(CheckFailed) as failed:
        run_benchmark(config, tmp_path / "log")
    message = str(failed.value)
    assert message.startswith(f"benchmark.yaml: {named}: ") and "\n" not in message
    assert "the real run would fail on it" in message
    assert not (tmp_path / "log" / "hpo").exists()  # refused before the run


def test_the_shortened_copy_keeps_early_stopping_so_the_run_checks_it(generated, tmp_path):
    from scaffold.verify import CheckFailed
    from scaffold.verify.benchmark import run_benchmark
    from scaffold.verify.shorten import shortened_copy

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
