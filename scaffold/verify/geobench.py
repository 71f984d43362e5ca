"""The ``geobench data`` check: no GEO-Bench sample the configs read holds a pickle that runs code.

TerraTorch's GEO-Bench readers unpickle each sample's ``pickle`` attribute (`data.pickles`).
The survey checked them when the output was generated; a folder may change afterwards, so the
ladder checks them again, first, before any check lets a TerraTorch reader open a sample. The
folders are those the benchmark YAML's tasks and the ``fit/`` configs name (a GEO-Bench
datamodule's ``data_root`` and its dataset's folder), hand edits included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaffold.data.geobench import readers
from scaffold.data.pickles import check_folder_pickles, refusal, sample_files
from scaffold.verify.fit import fit_files
from scaffold.verify.types import CheckFailed, read_config


def _datamodules(context) -> list[dict[str, Any]]:
    """Every datamodule section of the benchmark YAML's tasks and of the fit configs."""
    found = []
    config = read_config(context.config_path)
    for task in config.get("tasks") or []:
        if isinstance(task, dict) and isinstance(task.get("datamodule"), dict):
            found.append(task["datamodule"])
    for rel in fit_files(context.state):
        path = context.directory / rel
        if path.is_file():
            data = read_config(path).get("data")
            if isinstance(data, dict):
                found.append(data)
    return found


def reads_geobench(context) -> bool:
    """Whether the check applies: GEO-Bench was given, or a datamodule reads a ``data_root``."""
    if context.state.options.geobench:
        return True
    try:
        sections = _datamodules(context)
    except CheckFailed:
        return False  # the checks that read the configs report that
    return any("data_root" in (s.get("init_args") or {}) for s in sections)


def geobench_folders(context) -> list[Path]:
    """The GEO-Bench dataset folders the configs read, in order, once each."""
    folder_of = {r.datamodule: data_dir for data_dir, r in readers().items()}
    folders: list[Path] = []
    for section in _datamodules(context):
        data_dir = folder_of.get(str(section.get("class_path", "")))
        root = (section.get("init_args") or {}).get("data_root")
        if data_dir and root:
            folders.append(Path(str(root)) / data_dir)
    return list(dict.fromkeys(folders))


def check_geobench_data(context) -> str:
    folders = geobench_folders(context)
    files = 0
    for folder in folders:
        bad = check_folder_pickles(folder)
        if bad is not None:
            raise CheckFailed(f"{refusal(*bad)}; no check that reads the data was run")
        files += len(sample_files(folder))
    return (
        f"{files} samples in {len(folders)} GEO-Bench folder(s): every pickled attribute holds "
        "only what GEO-Bench writes"
    )
