"""Finding a dataset's layout from its folders and file names alone (no pixels are read here).

Rules, never dataset names:
- split folders: subfolders named like a split (``train``/``training``, ``val``/``validation``,
  ``test``/``testing``, ...);
- split lists: ``*.txt``/``*.csv`` files whose name has a split word (``train.txt``,
  ``flood_val_data.csv``), in the root or a ``splits``-like subfolder; one sample per line;
- images and labels pair by the stem they share once a suffix is removed (``s1_img``/``s1_mask``,
  ``x_S2Hand``/``x_LabelHand``), in one folder or in two sibling folders;
- class folders (``<class>/<file>.tif``) mean classification;
- in a split folder, region folders that are each laid out alike (``test/<region>/img/*.tif``
  beside ``test/<region>/lbl/*.tif``) are read through a file pattern with the region as ``*``
  (``*/img/*.tif``); a split folder that holds a single folder is read inside it, or as one
  region when the other splits have region folders; a region laid out otherwise is refused;
- a folder that holds a single folder and nothing else (not a split folder) is a wrapper, as
  datasets unpack (``EuroSAT/EuroSAT_MS/<class>/...``): the dataset is the folder inside.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scaffold.errors import ScaffoldError

IMAGE_EXTENSIONS = (".tif", ".tiff")
SPLIT_WORDS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training", "trn"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing", "tst"),
}
LIST_EXTENSIONS = (".txt", ".csv")
LIST_FOLDERS = ("splits", "split", "lists", "folds")
# Words that mark a folder or a file suffix as holding labels.
LABEL_WORDS = ("label", "mask", "lbl", "gt", "annotation", "target", "truth", "seg")
SEPARATORS = "_-."
SHOWN = 3  # how many names an error quotes


@dataclass(frozen=True)
class Pair:
    key: str
    image: Path
    label: Path | None  # None: classification (the class is `klass`)
    klass: str | None = None


@dataclass(frozen=True)
class Samples:
    """The samples found in one folder (a split folder or the whole pool)."""

    pairing: str  # "same-folder", "sibling-folders", "class-folders"
    pairs: tuple[Pair, ...]
    image_root: Path
    label_root: Path | None
    image_suffix: str = ""
    label_suffix: str = ""
    # Region folders: the part of the file pattern between the roots and the files
    # ("*/img/": every region's img folder); empty when the files are right in the roots.
    image_dirs: str = ""
    label_dirs: str = ""


@dataclass(frozen=True)
class Layout:
    layout: str  # "split-folders", "split-lists", "no-split"
    pairing: str
    splits: dict[str, Samples]  # split name -> samples
    sources: dict[str, str]  # split name -> "folder", "list" or "generated"
    list_files: dict[str, Path]
    folder: Path | None = None  # the folder the layout is in: the root, or inside its wrappers


def tifs(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_of(name: str) -> str | None:
    """The split a folder or list-file name stands for (``Training`` -> train), or None."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    found = {split for split, words in SPLIT_WORDS.items() for t in tokens if t in words}
    return found.pop() if len(found) == 1 else None


def is_label_name(name: str) -> bool:
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    return any(t.startswith(LABEL_WORDS) for t in tokens)


def common_suffix(stems: list[str]) -> str:
    """The longest suffix, starting at a separator, that every stem has (leaving a key)."""
    first = stems[0]
    for i, ch in enumerate(first):
        if ch in SEPARATORS and i > 0:
            suffix = first[i:]
            if all(s.endswith(suffix) and len(s) > len(suffix) for s in stems):
                return suffix
    return ""


def last_suffix(stem: str) -> str:
    """``s1_img`` -> ``_img``; a stem without a separator has the empty suffix."""
    positions = [i for i, ch in enumerate(stem) if ch in SEPARATORS and i > 0]
    return stem[positions[-1] :] if positions else ""


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def _names(paths: list[Path] | list[str], root: Path | None = None) -> str:
    shown = [str(p.relative_to(root)) if root and isinstance(p, Path) else str(p) for p in paths]
    more = f" and {len(shown) - SHOWN} more" if len(shown) > SHOWN else ""
    return ", ".join(shown[:SHOWN]) + more


def _pair(
    images: list[Path], labels: list[Path], root: Path, what: str
) -> tuple[tuple[Pair, ...], str, str]:
    """Pair images and labels by the key left once their common suffixes are removed."""
    image_suffix = common_suffix([_stem(p) for p in images])
    label_suffix = common_suffix([_stem(p) for p in labels])
    by_key_img = {_stem(p)[: len(_stem(p)) - len(image_suffix)]: p for p in images}
    by_key_lbl = {_stem(p)[: len(_stem(p)) - len(label_suffix)]: p for p in labels}
    lonely_img = sorted(by_key_img.keys() - by_key_lbl.keys())
    lonely_lbl = sorted(by_key_lbl.keys() - by_key_img.keys())
    if lonely_img or lonely_lbl:
        parts = []
        if lonely_img:
            parts.append(
                f"{len(lonely_img)} image(s) without a label: "
                + _names([by_key_img[k] for k in lonely_img], root)
            )
        if lonely_lbl:
            parts.append(
                f"{len(lonely_lbl)} label(s) without an image: "
                + _names([by_key_lbl[k] for k in lonely_lbl], root)
            )
        raise ScaffoldError(
            f"{what}: images and labels do not pair by name "
            f"(image suffix {image_suffix!r}, label suffix {label_suffix!r}): " + "; ".join(parts)
        )
    pairs = tuple(Pair(k, by_key_img[k], by_key_lbl[k]) for k in sorted(by_key_img))
    return pairs, image_suffix, label_suffix


def _labels_first(
    a: list[Path], b: list[Path], names: tuple[str, str], bands: Callable[[Path], int]
) -> bool:
    """Whether group `a` (named names[0]) holds the labels rather than `b`."""
    a_label, b_label = is_label_name(names[0]), is_label_name(names[1])
    if a_label != b_label:
        return a_label
    a_bands, b_bands = bands(a[0]), bands(b[0])
    if a_bands != b_bands:
        return a_bands < b_bands
    raise ScaffoldError(
        f"cannot tell images from labels: {names[0]!r} and {names[1]!r} look alike "
        f"({a_bands} band(s) each); name the label folder or suffix 'label' or 'mask'"
    )


def find_samples(
    folder: Path,
    root: Path,
    bands: Callable[[Path], int],
    regions: bool = False,
    one_region_inside: bool = True,
) -> Samples | None:
    """The samples in `folder`, or None when it holds no image at all. `regions`: a folder of
    folders without images of their own may hold region folders (see `_region_samples`)."""
    direct = tifs(folder)
    subs = [(s, tifs(s)) for s in _subfolders(folder)]
    subs = [(s, files) for s, files in subs if files]
    where = str(folder.relative_to(root)) if folder != root else str(root)
    if direct:
        groups: dict[str, list[Path]] = {}
        for p in direct:
            groups.setdefault(last_suffix(_stem(p)), []).append(p)
        if len(groups) == 2:
            (sa, a), (sb, b) = sorted(groups.items())
            keys_a = {_stem(p)[: len(_stem(p)) - len(sa)] for p in a}
            keys_b = {_stem(p)[: len(_stem(p)) - len(sb)] for p in b}
            if keys_a & keys_b:
                if _labels_first(a, b, (sa or "(none)", sb or "(none)"), bands):
                    (sa, a), (sb, b) = (sb, b), (sa, a)
                pairs, isuf, lsuf = _pair(a, b, root, where)
                if not isuf or not lsuf:
                    raise ScaffoldError(
                        f"{where}: images and labels share a folder and the "
                        f"{'images' if not isuf else 'labels'} have no suffix of their own "
                        f"(e.g. {a[0].name} and {b[0].name}), so no file pattern tells them "
                        "apart; give both a suffix or put the labels in their own folder"
                    )
                return Samples("same-folder", pairs, folder, folder, isuf, lsuf)
        if not subs:
            raise ScaffoldError(
                f"{where}: {len(direct)} image(s) but no labels beside them "
                f"(e.g. {_names(direct, root)}): put labels in a sibling folder, or images in "
                "class folders for classification"
            )
    if len(subs) == 2:
        (fa, a), (fb, b) = subs
        keys = {_stem(p) for p in a} & {_stem(p) for p in b}
        if is_label_name(fa.name) or is_label_name(fb.name) or keys:
            if _labels_first(a, b, (fa.name, fb.name), bands):
                (fa, a), (fb, b) = (fb, b), (fa, a)
            pairs, isuf, lsuf = _pair(a, b, root, where)
            return Samples("sibling-folders", pairs, fa, fb, isuf, lsuf)
    if len(subs) >= 2:
        pairs = tuple(Pair(_stem(p), p, None, klass=s.name) for s, files in subs for p in files)
        return Samples("class-folders", pairs, folder, None)
    if len(subs) == 1:
        raise ScaffoldError(
            f"{where}: one folder of images ({subs[0][0].name}) and nothing to pair them with "
            "(a label folder beside it, or class folders)"
        )
    if regions and not direct:
        return _region_samples(folder, root, bands, one_region_inside)
    return None


def _region_samples(
    folder: Path, root: Path, bands: Callable[[Path], int], one_region_inside: bool = True
) -> Samples | None:
    """Region folders in a split folder, each laid out alike: images and labels in one folder or
    in two sibling folders of the same names in every region. A single folder is read as the
    split itself, unless `one_region_inside` is False (the other splits have regions: it is read
    as one region then). Keys are prefixed by the region (two regions may reuse a tile name)."""
    regions = _subfolders(folder)
    if len(regions) == 1 and one_region_inside:
        return find_samples(regions[0], root, bands)
    tried = [(r, find_samples(r, root, bands)) for r in regions]
    found = [(r, s) for r, s in tried if s is not None]
    if not found:
        return None
    where = folder.relative_to(root)
    for r, s in found:
        if s.label_root is None:  # class folders: no region may be read without labels
            folders = sorted({p.klass for p in s.pairs if p.klass})
            labelled = [o.name for o, other in found if other.label_root is not None]
            beside = f", unlike {_names(labelled)}" if labelled else ""
            raise ScaffoldError(
                f"{r.relative_to(root)}: a region folder with {len(folders)} folders of images "
                f"({_names(folders)}) and no labels paired with them{beside}: each region "
                "needs its images and labels in one folder, or in sibling folders named alike"
            )
    shapes = {
        (
            s.pairing,
            s.image_root.relative_to(r),
            s.label_root.relative_to(r),
            s.image_suffix,
            s.label_suffix,
        )
        for r, s in found
        if s.label_root is not None
    }
    if len(shapes) != 1 or len(found) != len(regions):
        laid = ", ".join(f"{r.name} ({s.pairing})" for r, s in found)
        raise ScaffoldError(
            f"{where}: region folders laid out differently or without labels ({laid}"
            f"{'; some without images' if len(found) != len(regions) else ''}): each region "
            "needs its images and labels in one folder, or in sibling folders named alike"
        )
    pairing, image_dir, label_dir, isuf, lsuf = shapes.pop()
    pairs = tuple(
        Pair(f"{r.name}/{p.key}", p.image, p.label) for r, samples in found for p in samples.pairs
    )
    return Samples(pairing, pairs, folder, folder, isuf, lsuf, _dirs(image_dir), _dirs(label_dir))


def _dirs(inside: Path) -> str:
    """The file pattern's folder part for regions: ``*/`` and the folders inside a region."""
    return "/".join(["*", *inside.parts]) + "/"


def split_folders(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for sub in _subfolders(root):
        split = split_of(sub.name) if sub.name.lower() in _ALL_SPLIT_WORDS else None
        if split is not None:
            if split in found:
                raise ScaffoldError(
                    f"{root}: two folders for the {split} split: {found[split].name}, {sub.name}"
                )
            found[split] = sub
    return found


_ALL_SPLIT_WORDS = {w for words in SPLIT_WORDS.values() for w in words}


def split_lists(root: Path) -> dict[str, Path]:
    places = [root] + [p for p in _subfolders(root) if p.name.lower() in LIST_FOLDERS]
    found: dict[str, Path] = {}
    for place in places:
        for f in sorted(place.iterdir()):
            if f.is_file() and f.suffix.lower() in LIST_EXTENSIONS:
                split = split_of(_stem(f))
                if split is not None and split not in found:
                    found[split] = f
    return found


def read_list(path: Path) -> list[str]:
    """Sample names, one a line (csv: the first column), folders and extensions dropped."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".csv":
        rows = [row[0] for row in csv.reader(text.splitlines()) if row and row[0].strip()]
    else:
        rows = [line for line in text.splitlines() if line.strip()]
    names = []
    for row in rows:
        name = row.strip().replace("\\", "/").rsplit("/", 1)[-1]
        for ext in IMAGE_EXTENSIONS:
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
        names.append(name)
    return names


def _match_list(names: list[str], samples: Samples, path: Path, root: Path) -> tuple[Pair, ...]:
    """The samples a split list names (by key or by an image's or label's stem)."""
    index: dict[str, Pair] = {}
    for pair in samples.pairs:
        for alias in (pair.key, _stem(pair.image), _stem(pair.label) if pair.label else None):
            if alias:
                index.setdefault(alias, pair)
    chosen: dict[str, Pair] = {}
    missing = []
    for i, name in enumerate(names):
        if name in index:
            chosen[index[name].image.name] = index[name]
        elif not (i == 0 and path.suffix.lower() == ".csv"):  # a csv header
            missing.append(name)
    if missing:
        raise ScaffoldError(
            f"{path.relative_to(root)}: {len(missing)} name(s) match no sample: " + _names(missing)
        )
    return tuple(chosen[k] for k in sorted(chosen))


def generated_split(pairs: tuple[Pair, ...], seed: int = 0) -> dict[str, tuple[Pair, ...]]:
    """A deterministic 70/15/15 split (per class for classification), sorted within each."""
    import numpy as np

    groups: dict[str | None, list[Pair]] = {}
    for p in sorted(pairs, key=lambda p: (p.klass or "", p.image.name)):
        groups.setdefault(p.klass, []).append(p)
    out: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    for members in groups.values():
        order = np.random.default_rng(seed).permutation(len(members))
        n = len(members)
        n_val = max(1, round(0.15 * n)) if n >= 3 else 0
        n_test = max(1, round(0.15 * n)) if n >= 3 else 0
        for rank, i in enumerate(order):
            split = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
            out[split].append(members[i])
    return {k: tuple(sorted(v, key=lambda p: p.image.name)) for k, v in out.items()}


def dataset_folder(root: Path) -> Path:
    """The folder that holds the dataset: `root`, or, while a folder holds a single folder and
    nothing else (hidden files aside) that is not a split folder, the folder inside it."""
    folder, seen = root, {root.resolve()}
    while True:
        try:
            entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
            inner = entries[0] if len(entries) == 1 and entries[0].is_dir() else None
            if inner is None or inner.name.lower() in _ALL_SPLIT_WORDS:
                return folder
            if inner.resolve() in seen:  # a link back up: no dataset in there
                return folder
        except OSError:  # unreadable: the layout's own reads say so
            return folder
        seen.add(inner.resolve())
        folder = inner


def find_layout(root: Path, bands: Callable[[Path], int]) -> Layout:
    """The layout of the dataset folder `root`, or of the folder inside its wrappers
    (ScaffoldError when none fits)."""
    folder = dataset_folder(root)
    layout = _find_layout(folder, bands)
    return dataclasses.replace(layout, folder=folder)


def _find_layout(root: Path, bands: Callable[[Path], int]) -> Layout:
    folders = split_folders(root)
    if folders:
        if "train" not in folders or "val" not in folders:
            raise ScaffoldError(
                f"{root}: split folders {', '.join(sorted(f.name for f in folders.values()))} "
                "but no training or no validation folder (train/training, val/validation)"
            )
        found: dict[str, Samples] = {}
        for split, folder in folders.items():
            samples = find_samples(folder, root, bands, regions=True)
            if samples is None:
                raise ScaffoldError(
                    f"{folder}: no images (*.tif, *.tiff) in the {split} split"
                    + _nested_deeper(folder, root)
                )
            found[split] = samples
        if any(s.image_dirs for s in found.values()):
            # The other splits have region folders: a split holding a single folder is one
            # region too (one file pattern reads every split); a flat split reads as before.
            for split, samples in found.items():
                again = None
                if not samples.image_dirs:
                    again = find_samples(
                        folders[split], root, bands, regions=True, one_region_inside=False
                    )
                found[split] = again or samples
        kinds = {s.pairing for s in found.values()}
        if len(kinds) > 1:
            raise ScaffoldError(f"{root}: the split folders are laid out differently: {kinds}")
        dirs = {(s.image_dirs, s.label_dirs) for s in found.values()}
        if len(dirs) > 1:
            shown = ", ".join(
                f"{split} {s.image_dirs or '(files in the split folder)'}"
                for split, s in sorted(found.items())
            )
            raise ScaffoldError(
                f"{root}: some splits keep their images in region folders and some do not "
                f"({shown}); TerraTorch reads every split with one file pattern: lay them out alike"
            )
        sources = dict.fromkeys(found, "folder")
        if "test" not in found:  # the validation split serves as the test split too
            found["test"], sources["test"] = found["val"], "folder"
        return Layout("split-folders", kinds.pop(), found, sources, {})

    pool = find_samples(root, root, bands)
    if pool is None:
        raise ScaffoldError(
            f"{root}: no images found (tried *.tif and *.tiff in {root}, in its subfolders, "
            f"and in split folders named {', '.join(sorted(_ALL_SPLIT_WORDS))})"
            + _not_a_wrapper(root)
        )
    lists = split_lists(root)
    if lists:
        if "train" not in lists or "val" not in lists:
            raise ScaffoldError(
                f"{root}: split lists {', '.join(p.name for p in lists.values())} but no "
                "training or no validation list"
            )
        chosen = {s: _match_list(read_list(p), pool, p, root) for s, p in lists.items()}
        if "test" not in chosen:
            chosen["test"], lists = chosen["val"], {**lists, "test": lists["val"]}
        splits = {s: _subset(pool, pairs) for s, pairs in chosen.items()}
        return Layout("split-lists", pool.pairing, splits, dict.fromkeys(splits, "list"), lists)

    if len(pool.pairs) < 3:
        raise ScaffoldError(
            f"{root}: {len(pool.pairs)} sample(s) and no split: at least 3 are needed to make "
            "train, val and test splits"
        )
    parts = generated_split(pool.pairs)
    splits = {s: _subset(pool, pairs) for s, pairs in parts.items()}
    return Layout("no-split", pool.pairing, splits, dict.fromkeys(splits, "generated"), {})


def _nested_deeper(folder: Path, root: Path) -> str:
    """The images under `folder` that no rule reads (nested deeper than region folders)."""
    deeper = sorted(
        Path(where) / name
        for where, _, files in os.walk(folder)  # links to folders are not followed: no loops
        for name in files
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS
    )
    if not deeper:
        return ""
    return (
        f", but {len(deeper)} image(s) in folders nested deeper, which are not read "
        f"(e.g. {_names(deeper[:1], root)}): put them in the split folder, in image and label "
        "folders in it, or in region folders that each hold those"
    )


def _not_a_wrapper(root: Path) -> str:
    """Why the single folder in `root` was not taken for the dataset: files beside it."""
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    folders = [p for p in entries if p.is_dir()]
    if len(folders) != 1:
        return ""
    beside = [p.name for p in entries if p not in folders]
    return (
        f"; {folders[0].name}/ is not taken for the dataset since {_names(beside)} lies beside "
        f"it: pass --data {folders[0]}"
    )


def _subset(pool: Samples, pairs: tuple[Pair, ...]) -> Samples:
    return dataclasses.replace(pool, pairs=pairs)


def grep_for(suffix: str, files: list[Path]) -> str:
    extensions = {p.suffix for p in files}
    ext = extensions.pop() if len(extensions) == 1 else ".tif*"
    return f"*{suffix}{ext}"


def grep_matches(grep: str, files: list[Path], base: Path | None = None) -> list[Path]:
    """The files that `grep` matches: by name, or by the path under `base` when the pattern
    has folders (region folders)."""
    if base is not None and "/" in grep:
        return [p for p in files if fnmatch.fnmatchcase(str(p.relative_to(base)), grep)]
    return [p for p in files if fnmatch.fnmatchcase(p.name, grep)]
