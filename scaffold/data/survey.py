"""The survey stage: a dataset folder -> DatasetSpec (layout, pairs, splits, bands, labels, stats)."""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any

from scaffold.data.bands import names_from_descriptions
from scaffold.data.layout import Layout, Pair, Samples, find_layout, grep_for, grep_matches
from scaffold.data.read import (
    DEFAULT_MAX_PIXELS,
    RasterInfo,
    band_count,
    band_statistics,
    check_pixels,
    label_values,
    raster_info,
)
from scaffold.data.spec import SPLITS, DatasetSpec, SplitSpec
from scaffold.errors import ScaffoldError, check_utf8_path, printable

MAX_CLASSES = 256  # float labels with more distinct integral values than this are regression


def task_name(root: Path, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_") or "data"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def fingerprint(root: Path) -> str:
    """A hash of the relative path, size and modification time of every file under `root`.
    A folder that cannot be listed or a link that leads nowhere is refused, naming it."""
    digest = hashlib.sha256()

    def unlistable(exc: OSError) -> None:
        where = exc.filename or root
        raise ScaffoldError(f"--data {root}: cannot list {where} ({exc.strerror or exc})")

    for folder, dirs, files in os.walk(root, onerror=unlistable):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            check_utf8_path(f"--data {printable(str(root))}: the file", path)
            try:
                stat = path.stat()
            except OSError as exc:
                raise ScaffoldError(f"--data {root}: {_broken_link(path, exc)}") from exc
            digest.update(
                f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def _broken_link(path: Path, exc: OSError) -> str:
    if path.is_symlink():
        target = os.readlink(path)
        if exc.errno == errno.ELOOP:
            return f"{path} is a symbolic link in a loop (-> {target})"
        return f"{path} is a symbolic link to {target}, which does not exist"
    return f"cannot read {path} ({exc.strerror or exc})"


def survey(
    root: Path,
    name: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Any = None,
) -> DatasetSpec:
    """Survey the dataset folder `root` (ScaffoldError, naming the files, when it is unusable)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ScaffoldError(f"--data {root}: no such directory")
    print_ = fingerprint(root)
    layout = find_layout(root, band_count)
    notes: list[str] = []
    if layout.folder is not None and layout.folder != root:
        notes.append(
            f"the dataset is in {_rel(root, layout.folder)}/: {root} holds that folder and "
            "nothing else (a wrapper around it)"
        )
    if layout.layout == "no-split":
        notes.append(
            "no split found: scaffold writes deterministic 70/15/15 split files beside the YAML"
        )
    val, test = layout.splits["val"].pairs, layout.splits["test"].pairs
    if [p.image for p in val] == [p.image for p in test]:
        notes.append("no test split: the validation split is used as the test split")

    infos = _check_images(root, layout)
    first = infos[layout.splits["train"].pairs[0].image]
    if layout.pairing == "class-folders":
        _check_classes(root, layout)
    else:
        _check_labels(root, layout, infos)
        _check_order(root, layout)
    classes: tuple[str, ...]
    task, classes, ignore, label_info = ("classification", (), None, None)
    if layout.pairing != "class-folders":
        task, classes, ignore, label_info = _label_survey(root, layout)
    else:
        classes = tuple(sorted({p.klass for p in layout.splits["train"].pairs if p.klass}))

    train_images = [p.image for p in layout.splits["train"].pairs]
    means, stds, used, total = band_statistics(train_images, first.count, max_pixels, progress)
    if used < total:
        notes.append(f"band statistics from a random sample of {used} of {total} pixels")
    has_nan = first.dtype.startswith("float")

    img_grep = label_grep = None
    if layout.pairing != "class-folders":
        pool = layout.splits["train"]
        img_grep = pool.image_dirs + grep_for(pool.image_suffix, [p.image for p in pool.pairs])
        labels = [p.label for p in pool.pairs if p.label]
        label_grep = pool.label_dirs + grep_for(pool.label_suffix, labels)
        _check_greps(root, layout, img_grep, label_grep)

    splits = tuple(_split_spec(root, s, layout) for s in SPLITS)
    num_classes = len(classes) if task == "classification" else None
    if task == "segmentation":
        num_classes = int(max(int(c) for c in classes)) + 1
    return DatasetSpec(
        name=name or task_name(root, set()),
        root=str(root),
        task=task,  # type: ignore[arg-type]
        layout=layout.layout,
        pairing=layout.pairing,
        splits=splits,
        img_grep=img_grep,
        label_grep=label_grep,
        bands=first.count,
        dtype=first.dtype,
        size=(first.height, first.width),
        nodata=first.nodata,
        has_nan=has_nan,
        label_dtype=label_info.dtype if label_info else None,
        label_nodata=label_info.nodata if label_info else None,
        classes=classes,
        num_classes=num_classes,
        ignore_index=ignore,
        means=tuple(means),
        stds=tuple(stds),
        pixels_used=used,
        pixels_total=total,
        notes=tuple(notes),
        fingerprint=print_,
        band_names=names_from_descriptions(first.descriptions),
    )


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def _all_pairs(layout: Layout) -> list[Pair]:
    seen: dict[Path, Pair] = {}
    for split in SPLITS:  # training files first: they are the reference
        for p in layout.splits[split].pairs:
            seen.setdefault(p.image, p)
    return list(seen.values())


def _check_images(root: Path, layout: Layout) -> dict[Path, RasterInfo]:
    """Every image has the training images' band count and size."""
    infos: dict[Path, RasterInfo] = {}
    reference: RasterInfo | None = None
    for pair in _all_pairs(layout):
        info = raster_info(pair.image)
        check_pixels(pair.image)
        infos[pair.image] = info
        if reference is None:
            reference = info
            continue
        for what, mine, theirs in (
            ("file formats", reference.driver, info.driver),
            ("data types", reference.dtype, info.dtype),
            ("nodata values", reference.nodata, info.nodata),
        ):
            if not _same(mine, theirs):
                raise ScaffoldError(
                    f"{what} differ: {_rel(root, reference.path)} has {mine}, "
                    f"{_rel(root, info.path)} has {theirs} (every image must agree)"
                )
        if info.count != reference.count:
            raise ScaffoldError(
                f"band counts differ: {_rel(root, reference.path)} has {reference.count}, "
                f"{_rel(root, info.path)} has {info.count}"
            )
        if (info.height, info.width) != (reference.height, reference.width):
            raise ScaffoldError(
                f"image sizes differ: {_rel(root, reference.path)} is "
                f"{reference.height}x{reference.width}, {_rel(root, info.path)} is "
                f"{info.height}x{info.width}"
            )
    return infos


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN nodata included."""
    nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return nan or a == b


def _check_labels(root: Path, layout: Layout, infos: dict[Path, RasterInfo]) -> None:
    reference: RasterInfo | None = None
    for pair in _all_pairs(layout):
        assert pair.label is not None
        label = raster_info(pair.label)
        image = infos[pair.image]
        reference = reference or label
        if not _same(label.nodata, reference.nodata):  # the ignore value comes from one
            raise ScaffoldError(
                f"nodata values differ: label {_rel(root, reference.path)} has "
                f"{reference.nodata}, {_rel(root, label.path)} has {label.nodata} "
                "(every label must agree)"
            )
        if label.count != 1:
            raise ScaffoldError(
                f"{_rel(root, pair.label)}: a label has one band, this one has {label.count}"
            )
        if (label.height, label.width) != (image.height, image.width):
            raise ScaffoldError(
                f"{_rel(root, pair.label)} is {label.height}x{label.width}, its image "
                f"{_rel(root, pair.image)} is {image.height}x{image.width}"
            )


def _check_order(root: Path, layout: Layout) -> None:
    """TerraTorch pairs images and labels by position in the sorted file lists: the two sorted
    orders must be the same samples."""
    for samples in layout.splits.values():
        by_image = sorted(samples.pairs, key=lambda p: str(p.image))
        by_label = sorted(samples.pairs, key=lambda p: str(p.label))
        for a, b in zip(by_image, by_label, strict=True):
            if a.key != b.key:
                raise ScaffoldError(
                    f"sorted by name, image {_rel(root, a.image)} would meet label "
                    f"{_rel(root, b.label) if b.label else '?'} (TerraTorch pairs by sorted "
                    "position); rename so that images and labels sort alike"
                )


def _check_classes(root: Path, layout: Layout) -> None:
    """ImageFolder numbers the class folders of each split root in sorted order: every split
    needs the same class folders, and the root nothing else."""
    train = layout.splits["train"]
    classes = sorted({p.klass for p in train.pairs if p.klass})
    for split, samples in layout.splits.items():
        folders = sorted(
            p.name
            for p in samples.image_root.iterdir()
            if p.is_dir() and not p.name.startswith(".")
        )
        if folders != classes:
            extra = sorted(set(folders) - set(classes))
            missing = sorted(set(classes) - set(folders))
            raise ScaffoldError(
                f"{_rel(root, samples.image_root) if samples.image_root != root else root}: "
                f"TerraTorch numbers every folder there as a class; the {split} split has "
                + (f"extra folder(s) {extra}" if extra else "")
                + ("; " if extra and missing else "")
                + (f"no folder for class(es) {missing}" if missing else "")
                + f" (training classes: {classes})"
            )


def _check_greps(root: Path, layout: Layout, img_grep: str, label_grep: str) -> None:
    samples = layout.splits["train"]
    if samples.image_root == samples.label_root:
        images = [p.image for p in samples.pairs]
        labels = [p.label for p in samples.pairs if p.label]
        base = samples.image_root
        wrong = grep_matches(img_grep, labels, base) or grep_matches(label_grep, images, base)
        if wrong:
            raise ScaffoldError(
                f"the file patterns {img_grep!r} (images) and {label_grep!r} (labels) both match "
                f"{_rel(root, wrong[0])}: give images and labels suffixes that differ"
            )


def _split_spec(root: Path, split: str, layout: Layout) -> SplitSpec:
    samples: Samples = layout.splits[split]
    pairs = sorted(samples.pairs, key=lambda p: str(p.image))
    list_file = layout.list_files.get(split)
    return SplitSpec(
        name=split,
        image_root=str(samples.image_root),
        label_root=str(samples.label_root) if samples.label_root else None,
        images=tuple(_rel(root, p.image) for p in pairs),
        labels=tuple(_rel(root, p.label) for p in pairs if p.label),
        source=layout.sources[split],  # type: ignore[arg-type]
        list_file=str(list_file) if list_file else None,
    )


class _LabelInfo:
    def __init__(self, dtype: str, nodata: float | None) -> None:
        self.dtype, self.nodata = dtype, nodata


def no_label_value(values: set[float], nodata: float | None = None) -> int | None:
    """The "no label" value among a segmentation's label values: a declared nodata, a negative
    value, or a top value (255, 65535) set apart from the classes; None when there is none, a
    ScaffoldError when several look like one."""
    candidates: set[int] = set()
    if nodata is not None and math.isfinite(nodata):
        candidates.add(int(nodata))
    candidates |= {int(v) for v in values if v < 0}
    top = max(values) if values else 0
    rest = sorted(v for v in values if v != top and v >= 0)
    if top in (255, 65535) and (not rest or rest[-1] < top - 1):
        candidates.add(int(top))
    if len(candidates) > 1:
        raise ScaffoldError(
            f"label values {sorted(candidates)} all look like 'no label' values; "
            "keep one of them (a negative value, 255, or the label files' nodata)"
        )
    return candidates.pop() if candidates else None


def _label_survey(root: Path, layout: Layout):
    """(task, classes, ignore value, label info) from the values of every label file."""
    per_file = {}
    for pair in _all_pairs(layout):
        assert pair.label is not None
        per_file[pair.label] = label_values(pair.label)
    first_label = layout.splits["train"].pairs[0].label
    assert first_label is not None
    info = raster_info(first_label)
    label_info = _LabelInfo(info.dtype, info.nodata)
    floating = info.dtype.startswith("float")
    values: set[float] = set()
    for lv in per_file.values():
        values |= lv.values
    integral = all(lv.integral for lv in per_file.values())
    has_nan = any(lv.has_nan for lv in per_file.values())
    if floating and (not integral or len(values) > MAX_CLASSES):
        lo = min(lv.minimum for lv in per_file.values())
        ignore = None
        if info.nodata is not None and math.isfinite(info.nodata) and info.nodata.is_integer():
            ignore = int(info.nodata)
        elif info.nodata is not None or has_nan:
            ignore = math.floor(lo) - 1
        return "regression", (), ignore, label_info

    train_labels = {p.label for p in layout.splits["train"].pairs}
    train_values: set[float] = set()
    for path, lv in per_file.items():
        if path in train_labels:
            train_values |= lv.values
    ignore = no_label_value(values, info.nodata)
    classes = sorted(int(v) for v in train_values if int(v) != ignore)
    if len(classes) < 2:
        raise ScaffoldError(
            f"the training labels hold {len(classes)} class value(s) {classes}: "
            "a segmentation needs at least two"
        )
    num_classes = classes[-1] + 1
    for path, lv in sorted(per_file.items()):
        outside = sorted(int(v) for v in lv.values if int(v) != ignore and not 0 <= v < num_classes)
        if outside:
            raise ScaffoldError(
                f"{_rel(root, path)}: label value(s) {outside} outside the classes "
                f"0..{num_classes - 1} of the training labels"
                + (f" (ignore value {ignore})" if ignore is not None else "")
            )
    return "segmentation", tuple(classes), ignore, label_info
