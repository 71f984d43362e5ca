"""The output folder's names: every file and folder scaffold writes, read by render, verify, update
and results alike (so none of them imports another stage to learn a file name)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "benchmark.yaml"  # the benchmark terratorch-iterate runs
RAY_CONFIG_FILE = "benchmark_ray.yaml"  # the same benchmark by the Ray route
DATA_DIR = "data"  # the smoke dataset
RUNS_DIR = "runs"  # MLflow and Ray storage of the runs
FIT_DIR = "fit"  # one `terratorch fit` config per task
BASELINES_DIR = "baselines"  # the benchmark with a timm backbone in place of the generated one
ITERATE2_DIR = "iterate2"  # terratorch-iterate's `iterate`: the trial script, an HPO YAML per task
TRIAL_SCRIPT = f"{ITERATE2_DIR}/trial.py"
# Where `iterate` runs go: the Optuna storage, and a working folder per task (iterate writes
# trial_N.out / trial_N.err into the folder it is started in).
ITERATE2_RUNS = f"{RUNS_DIR}/iterate2"
ITERATE2_STORAGE_FILE = "optuna.db"
SPLITS_DIR = "splits"  # split files of the real datasets
STATE_DIR = ".scaffold"
STATE_FILE = "state.json"
JOURNAL_FILE = "journal.json"  # an update's writes while they run (scaffold/write/journal.py)
PRISTINE_DIR = "pristine"  # the bases as plain files: states of earlier scaffold versions
LOCK_FILE = "lock"
TEMP_SUFFIX = ".scaffold-new"  # the temporary folder of a run: ".OUT.XXXXXXXX.scaffold-new"
WRITE_TEMP_SUFFIX = (
    ".scaffold-tmp"  # a file being written atomically: ".NAME.XXXXXXXX.scaffold-tmp"
)
# MLflow 3 refuses the file store that terratorch-iterate's storage_uri names unless this is
# set when the store opens: the commands scaffold prints set it, and so do its own runs (the
# generated package never does: importing it changes nothing of the process).
FILE_STORE_ENV = ("MLFLOW_ALLOW_FILE_STORE", "true")
DATA_NEW = ".data-new."  # the smoke data written anew, beside data/, before it moves in
DATA_OLD = ".data-old."  # the smoke data it replaces, kept until the update is complete


def _file_name(name: str) -> str:
    """`name` with the characters a file name cannot hold as _."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def baseline_config_file(name: str) -> str:
    """``baselines/<name>.yaml``, relative to DIR."""
    return f"{BASELINES_DIR}/{_file_name(name)}.yaml"


def fit_config_file(task: str) -> str:
    """``fit/<task>.yaml``, relative to DIR."""
    return f"{FIT_DIR}/{_file_name(task)}.yaml"


def hpo_config_file(task: str) -> str:
    """``iterate2/<task>.yaml``, relative to DIR: iterate's HPO YAML of `task`."""
    return f"{ITERATE2_DIR}/{_file_name(task)}.yaml"


def iterate2_workdir(task: str) -> str:
    """``runs/iterate2/<task>``, relative to DIR: where `iterate` is started for `task`."""
    return f"{ITERATE2_RUNS}/{_file_name(task)}"


def output_folder(path: Path) -> Path:
    """The output folder that the file `path` belongs to: the nearest folder above it that holds
    scaffold's state (a file copied out of one: its own folder). The paths in its YAML files
    are relative to it: every command runs from it (see benchmark.yaml's opening comment)."""
    path = Path(path).absolute()
    for folder in path.parents:
        if (folder / STATE_DIR / STATE_FILE).is_file():
            return folder
    return path.parent


def in_folder(folder: Path, value: object) -> Path:
    """A path from a generated YAML: relative ones are relative to the output folder `folder`,
    as the tools read them when run from there."""
    return Path(folder) / str(value)  # an absolute `value` stays itself


@dataclass(frozen=True)
class Names:
    package: str
    backbone_class: str
    factory_class: str


def names_for(name: str) -> Names:
    """The package and class names a backbone name gives: ``my_net`` -> MyNetBackbone, MyNetFactory."""
    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)
    return Names(package=name, backbone_class=f"{camel}Backbone", factory_class=f"{camel}Factory")


def output_folders() -> tuple[str, ...]:
    """The folders scaffold writes in DIR beside the package: a package by one of these names
    would share it with them."""

    return (DATA_DIR, RUNS_DIR, BASELINES_DIR, SPLITS_DIR)
