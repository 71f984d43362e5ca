"""The survey stage: dataset folders (``--data DIR``) -> DatasetSpecs the benchmark's tasks come from.

- `layout`: splits, image/label pairs and class folders, from folder and file names alone;
- `read`: rasterio reads: metadata, label values, streaming band statistics;
- `survey`: one folder -> one `DatasetSpec` (the checks that make bad data one clear error);
- `bands`: band names (TerraTorch's, Sentinel-2 ids as aliases), their wavelengths, and the
  per-band values of a task's bands;
- `geobench`: a GEO-Bench v1 download (``--geobench ROOT``) -> one `GeobenchTask` per dataset.

The YAML's tasks and split files are rendered from these in `scaffold.render.tasks`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scaffold.data.spec import DatasetSpec, SplitSpec

__all__ = ["DATA_FILE", "DatasetSpec", "SplitSpec", "read_datasets", "survey_all", "write_datasets"]

DATA_FILE = "data.json"  # in DIR/.scaffold: the surveys of the last generation


def survey_all(
    dirs: tuple[str, ...] | list[str],
    progress: Any = None,
    previous: tuple[DatasetSpec, ...] = (),
) -> tuple[DatasetSpec, ...]:
    """Survey each folder in turn; task names follow the folder names (made unique). A folder
    whose files are as they were at a `previous` survey keeps that survey."""
    import dataclasses

    from scaffold.data.survey import fingerprint, survey, task_name

    known = {(p.root, p.fingerprint): p for p in previous}
    taken: set[str] = set()
    found = []
    for root in dict.fromkeys(Path(d).resolve() for d in dirs):  # a folder given twice: once
        name = task_name(root, taken)
        taken.add(name)
        same = known.get((str(root), fingerprint(root))) if root.is_dir() else None
        if same is not None:
            found.append(dataclasses.replace(same, name=name))
            continue
        if progress is not None:
            progress.print(f"surveying {root}", highlight=False)
        spec = survey(root, name=name, progress=progress)
        if progress is not None:
            _say(progress, spec)
        found.append(spec)
    return tuple(found)


def _say(progress: Any, spec: DatasetSpec) -> None:
    sizes = ", ".join(f"{s.name} {len(s.images)}" for s in spec.splits)
    what = f"{spec.num_classes} classes" if spec.num_classes else "regression"
    if spec.ignore_index is not None:
        what += f", ignore value {spec.ignore_index}"
    progress.print(
        f"  {spec.name}: {spec.task} ({what}), {spec.bands} bands {spec.dtype} "
        f"{spec.size[0]}x{spec.size[1]}, {spec.layout}/{spec.pairing}: {sizes}",
        highlight=False,
    )
    for note in spec.notes:
        progress.print(f"  {spec.name}: {note}", highlight=False)


def write_datasets(state_dir: Path, datasets: tuple[DatasetSpec, ...]) -> None:
    path = state_dir / DATA_FILE
    if not datasets:
        path.unlink(missing_ok=True)
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    data = [d.to_dict() for d in datasets]
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_datasets(state_dir: Path) -> tuple[DatasetSpec, ...]:
    path = state_dir / DATA_FILE
    if not path.is_file():
        return ()
    return tuple(DatasetSpec.from_dict(d) for d in json.loads(path.read_text(encoding="utf-8")))
