"""`DatasetSpec`: what the survey of one dataset folder found, the contract rendering reads.

A spec is frozen and round-trips through JSON (``DatasetSpec.from_dict(spec.to_dict()) == spec``);
scaffold keeps the specs of an output in ``.scaffold/data.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

TaskType = Literal["segmentation", "classification", "regression"]
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSpec:
    """One split: where its images (and labels) are, and which files belong to it.

    `images` and `labels` are paths relative to the dataset root, in the order TerraTorch pairs
    them (sorted by file name); `labels` is empty for classification. `source` says how the split
    was found: ``"folder"`` (a split folder), ``"list"`` (a split list file, `list_file`) or
    ``"generated"`` (scaffold divided a dataset that had no split).
    """

    name: str
    image_root: str
    label_root: str | None
    images: tuple[str, ...]
    labels: tuple[str, ...] = ()
    source: Literal["folder", "list", "generated"] = "folder"
    list_file: str | None = None

    @property
    def needs_split_file(self) -> bool:
        """Folders that hold more than this split's files need a split file in the YAML."""
        return self.source != "folder"


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the YAML needs to know about one dataset folder.

    - `layout`: how splits were found (``"split-folders"``, ``"split-lists"``, ``"no-split"``);
      `pairing`: how images meet labels (``"same-folder"``, ``"sibling-folders"``,
      ``"class-folders"``).
    - `img_grep`/`label_grep`: the glob patterns of TerraTorch's pixel-wise datamodules.
    - `bands`, `dtype`, `size` (height, width), `nodata`: of the images (all files agree).
    - `classes`: label values (segmentation) or class folder names (classification);
      `num_classes`; `ignore_index`: the label value that means "no label", if any.
    - `means`/`stds`: per band, over the valid pixels of the training split (`pixels_used` of
      `pixels_total` pixels: a sample when the training split is larger than the stated limit).
    """

    name: str
    root: str
    task: TaskType
    layout: str
    pairing: str
    splits: tuple[SplitSpec, ...]
    img_grep: str | None
    label_grep: str | None
    bands: int
    dtype: str
    size: tuple[int, int]
    nodata: float | None
    has_nan: bool
    label_dtype: str | None
    label_nodata: float | None
    classes: tuple[int | str, ...]
    num_classes: int | None
    ignore_index: int | None
    means: tuple[float, ...]
    stds: tuple[float, ...]
    pixels_used: int
    pixels_total: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Names, sizes and times of the folder's files when surveyed: an unchanged folder is not
    # read again.
    fingerprint: str = ""
    # The bands by TerraTorch's names, when every band's GeoTIFF description is one.
    band_names: tuple[str, ...] = ()

    def split(self, name: str) -> SplitSpec:
        return next(s for s in self.splits if s.name == name)

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["splits"] = tuple(
            SplitSpec(**{**s, "images": tuple(s["images"]), "labels": tuple(s.get("labels") or ())})
            for s in data["splits"]
        )
        for key in ("size", "classes", "means", "stds", "notes", "band_names"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> DatasetSpec:
        return cls.from_dict(json.loads(text))
