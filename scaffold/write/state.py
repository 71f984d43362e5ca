"""What `scaffold` keeps in ``DIR/.scaffold/``: the spec, the options, the merge bases, a lock.

``state.json`` holds scaffold's version, the options the person gave (so `update` can re-run the
analysis the same way), the spec, the smoke files written under ``data/``, and ``bases``: each
generated file exactly as rendered, the base of `update`'s three-way merge. A base is stored
zlib-compressed and base64-encoded beside the sha256 of its content, so that the tools people run
over a whole folder (replace-in-files, ``sed`` over ``**/*.py``, ``ruff format .``, pre-commit
hooks) cannot edit it; a base that changed all the same is detected and refused, never trusted.
States written before that kept the bases as plain files under ``pristine/``: they are read, and
the next update moves them into ``state.json``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaffold.errors import ScaffoldError
from scaffold.spec import BackboneSpec
from scaffold.write.names import LOCK_FILE, PRISTINE_DIR, STATE_DIR, STATE_FILE


@dataclass(frozen=True)
class Options:
    """What the person asked `new-backbone` for; `update` replays it."""

    target: str
    args: dict[str, Any]
    input_shape: tuple[int, ...] | None = None
    name: str | None = None
    out: Path | None = None
    weights: Path | None = None
    task: str = "segmentation"
    data: tuple[str, ...] = ()  # dataset folders (--data), absolute: one real task each
    ray: bool = False  # also the Ray route's config, benchmark_ray.yaml
    iterate2: bool = False  # also iterate2's trial script and HPO YAMLs, under iterate2/
    baselines: tuple[str, ...] = ()  # reference backbones, one config each under baselines/
    # How the forward is called: --forward-arg NAME=VALUE (or PARAM.KEY=VALUE) and --image-arg.
    forward_args: dict[str, Any] = field(default_factory=dict)
    image_arg: str | None = None
    # GEO-Bench v1 datasets under this folder as tasks (--geobench), their partition, and the
    # model's input bands by TerraTorch's names (--bands).
    geobench: str | None = None
    partition: str = "default"
    bands: tuple[str, ...] = ()
    # The modality of each of `bands` where --bands names them per modality (s2=B02,...;s1=VV).
    band_modalities: tuple[str, ...] = ()
    # GEO-Bench-2 datasets under this folder as tasks (--geobench2) and which (--datasets).
    geobench2: str | None = None
    geobench2_datasets: tuple[str, ...] = ()
    # The features the person named (--taps), as `scaffold inspect` prints them.
    taps: tuple[str, ...] = ()
    # The evaluation tracks (--protocol: full_ft, frozen) and the seeds each task is repeated
    # with (--seeds N: seeds 0..N-1).
    protocol: tuple[str, ...] = ("full_ft",)
    seeds: int = 5

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out) if self.out else None
        data["weights"] = str(self.weights) if self.weights else None
        data["input_shape"] = list(self.input_shape) if self.input_shape else None
        data["data"] = list(self.data)
        data["baselines"] = list(self.baselines)
        data["bands"] = list(self.bands)
        data["band_modalities"] = list(self.band_modalities)
        data["geobench2_datasets"] = list(self.geobench2_datasets)
        data["taps"] = list(self.taps)
        data["protocol"] = list(self.protocol)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        return cls(
            target=data["target"],
            args=data.get("args") or {},
            input_shape=tuple(data["input_shape"]) if data.get("input_shape") else None,
            name=data.get("name"),
            out=Path(data["out"]) if data.get("out") else None,
            weights=Path(data["weights"]) if data.get("weights") else None,
            task=data.get("task", "segmentation"),
            data=tuple(data.get("data") or ()),
            ray=bool(data.get("ray", False)),
            iterate2=bool(data.get("iterate2", False)),
            baselines=tuple(data.get("baselines") or ()),
            forward_args=data.get("forward_args") or {},
            image_arg=data.get("image_arg"),
            geobench=data.get("geobench"),
            partition=data.get("partition") or "default",
            bands=tuple(data.get("bands") or ()),
            band_modalities=tuple(data.get("band_modalities") or ()),
            geobench2=data.get("geobench2"),
            geobench2_datasets=tuple(data.get("geobench2_datasets") or ()),
            taps=tuple(data.get("taps") or ()),
            protocol=tuple(data.get("protocol") or ("full_ft",)),
            seeds=int(data.get("seeds") or 5),
        )


@dataclass(frozen=True)
class State:
    version: str
    options: Options
    spec: BackboneSpec
    files: tuple[str, ...]  # generated files, relative to DIR
    # The merge bases: rel -> {"sha256", "zlib_base64"} (see encode_base). None: an older state
    # whose bases are plain files under pristine/.
    bases: dict[str, dict[str, str]] | None = field(default=None, compare=False)
    # The smoke files scaffold wrote under data/, relative to DIR. None: not recorded (older state).
    data_files: tuple[str, ...] | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "scaffold_version": self.version,
            "options": self.options.to_dict(),
            "files": list(self.files),
            "spec": self.spec.to_dict(),
        }
        if self.data_files is not None:
            data["data_files"] = list(self.data_files)
        if self.bases is not None:
            data["bases"] = {rel: self.bases[rel] for rel in sorted(self.bases)}
        return json.dumps(data, indent=2) + "\n"


def encode_base(content: bytes) -> dict[str, str]:
    """A merge base as state.json stores it: compressed (no text tool matches inside it), hashed."""
    return {
        "sha256": hashlib.sha256(content).hexdigest(),
        "zlib_base64": base64.b64encode(zlib.compress(content, 9)).decode("ascii"),
    }


def decode_base(entry: dict[str, str]) -> bytes | None:
    """The content `encode_base` stored; None when it is damaged (its sha256 does not match)."""
    try:
        content = zlib.decompress(base64.b64decode(entry["zlib_base64"], validate=True))
    except (KeyError, TypeError, ValueError, zlib.error):
        return None
    return content if hashlib.sha256(content).hexdigest() == entry.get("sha256") else None


def with_bases(state: State, bases: dict[str, bytes]) -> State:
    """`state` holding `bases` (rel -> content as rendered)."""
    from dataclasses import replace

    return replace(state, bases={rel: encode_base(content) for rel, content in bases.items()})


def write_state(root: Path, state: State, pristine: dict[str, bytes]) -> None:
    """Write state.json, the merge bases inside it, under `root`/.scaffold (root may be a temp
    dir)."""
    base = root / STATE_DIR
    base.mkdir(parents=True, exist_ok=True)
    (base / STATE_FILE).write_text(with_bases(state, pristine).to_json(), encoding="utf-8")


def is_generated(directory: Path) -> bool:
    return (directory / STATE_DIR / STATE_FILE).is_file()


def read_state(directory: Path) -> State:
    path = directory / STATE_DIR / STATE_FILE
    if not directory.is_dir():
        raise ScaffoldError(f"{directory}: no such directory")
    if not path.is_file():
        raise ScaffoldError(
            f"{directory}: not made by `scaffold new-backbone` (no {STATE_DIR}/{STATE_FILE})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return State(
            version=data["scaffold_version"],
            options=Options.from_dict(data["options"]),
            spec=BackboneSpec.from_dict(data["spec"], where=str(path)),
            files=tuple(data["files"]),
            bases=dict(data["bases"]) if data.get("bases") is not None else None,
            data_files=tuple(data["data_files"]) if "data_files" in data else None,
        )
    except OSError as exc:
        raise ScaffoldError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ScaffoldError(f"{path}: unreadable scaffold state ({exc})") from exc


def read_pristine(directory: Path, state: State, rel: str) -> bytes | None:
    """The base of `rel` for the merge (None: scaffold never generated it), checked against its
    hash: a base that changed since scaffold wrote it is refused, never trusted."""
    if state.bases is None:  # an older state: plain files under pristine/
        path = directory / STATE_DIR / PRISTINE_DIR / rel
        return path.read_bytes() if path.is_file() else None
    entry = state.bases.get(rel)
    if entry is None:
        return None
    where = directory / STATE_DIR / STATE_FILE
    content = decode_base(entry)
    if content is None:
        raise ScaffoldError(
            f"{where}: the stored base of {rel} was changed after scaffold wrote it (its sha256 "
            "does not match), so it cannot be trusted for the merge; restore state.json (from a "
            f'backup or version control), or delete "{rel}" from its "bases" so that update '
            "shows the whole file as a conflict to resolve"
        )
    return content


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold DIR's lock: a second scaffold process writing the same DIR is refused, not queued."""
    path = directory / STATE_DIR / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise ScaffoldError(f"{directory}: cannot lock it ({exc.strerror or exc})") from exc
        try:  # a folder that cannot be written: a lock file already there still locks
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            raise ScaffoldError(f"{directory}: cannot write there ({exc.strerror or exc})") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ScaffoldError(
                f"{directory}: another scaffold process is working on it; try again when it ends"
            ) from exc
        yield
    finally:
        os.close(fd)  # closing releases the lock
