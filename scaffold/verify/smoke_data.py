"""The ``data`` check: the smoke data under ``DIR/data`` is what the benchmark YAML reads it as.

scaffold writes the smoke dataset (scaffold/render/smoke.py) with the model's bands, frames and
size; the smoke task of benchmark.yaml reads it with its ``backbone_in_chans``. A file of another
band count or size (an update killed by an older scaffold while it rewrote the data, a file
copied in by hand) makes the run fail deep inside the datamodule, or train on a mix: here each
recorded smoke file's header is read (rasterio, no pixels) and compared, split by split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaffold.errors import one_line
from scaffold.render.smoke import LABEL_DIR
from scaffold.verify.shorten import PATH_KEY
from scaffold.verify.types import CheckFailed
from scaffold.write.names import DATA_DIR, in_folder


def smoke_task(context) -> tuple[str, dict[str, Any]] | None:
    """(name, model_args) of the first task of the YAML whose datamodule reads ``DIR/data``."""
    data = context.directory / DATA_DIR
    tasks = context.config().get("tasks") or []
    model_args = dict(context.task_model_args())
    for task in tasks:
        init = ((task or {}).get("datamodule") or {}).get("init_args") or {}
        # The datamodule's paths (*_root, *_split), relative ones from DIR as the run reads them.
        paths = [
            in_folder(context.directory, v)
            for k, v in init.items()
            if isinstance(v, str) and v and (PATH_KEY.search(str(k)) or v.startswith("/"))
        ]
        if any(p == data or p.is_relative_to(data) for p in paths):
            name = str(task.get("name", "?"))
            return name, model_args.get(name, {})
    return None


def check_smoke_data(context) -> str:
    import rasterio

    files = list(context.state.data_files or ())
    found = smoke_task(context)
    if found is None:
        return f"no task of {context.config_path.name} reads {context.directory / DATA_DIR}"
    name, model_args = found
    spec = context.state.spec
    chans = model_args.get("backbone_in_chans", spec.in_chans)
    frames = spec.num_frames or 1
    layers = chans * frames if isinstance(chans, int) else None
    height, width = spec.img_size
    said = f"the {name} task's backbone_in_chans is {chans}"
    said += f" ({frames} frames: {layers} bands)" if frames > 1 else ""
    for rel in files:
        path = context.directory / rel
        split = Path(rel).parts[1]
        try:
            with rasterio.open(path) as image:
                count, size = image.count, (image.height, image.width)
        except Exception as exc:
            what = "is missing" if not path.exists() else f"cannot be read ({one_line(exc)})"
            raise CheckFailed(f"split {split}: {path} {what}") from exc
        is_label = LABEL_DIR in Path(rel).parts[2:3]
        expected = 1 if is_label else layers
        if expected is not None and count != expected:
            why = "a label has 1 band" if is_label else said
            raise CheckFailed(f"split {split}: {path} has {count} bands; {why}")
        if size != (height, width):
            raise CheckFailed(
                f"split {split}: {path} is {size[0]}x{size[1]} pixels; the smoke data is "
                f"{height}x{width} (the analysed input size)"
            )
    splits = sorted({Path(rel).parts[1] for rel in files})
    return (
        f"{len(files)} smoke files in {', '.join(splits)}: {layers} bands, {height}x{width}, "
        f"as the {name} task reads them"
    )
