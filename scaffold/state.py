"""What `scaffold` keeps in ``DIR/.scaffold/``: the spec, the options, the pristine files, a lock.

``state.json`` holds scaffold's version, the options the person gave (so `update` can re-run the
analysis the same way) and the spec; ``pristine/`` holds each generated file exactly as rendered,
the base of `update`'s three-way merge.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaffold.errors import ScaffoldError
from scaffold.spec import BackboneSpec

STATE_DIR = ".scaffold"
STATE_FILE = "state.json"
PRISTINE_DIR = "pristine"
LOCK_FILE = "lock"


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
    # How the forward is called: --forward-arg NAME=VALUE (or PARAM.KEY=VALUE) and --image-arg.
    forward_args: dict[str, Any] = field(default_factory=dict)
    image_arg: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out) if self.out else None
        data["weights"] = str(self.weights) if self.weights else None
        data["input_shape"] = list(self.input_shape) if self.input_shape else None
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
            forward_args=data.get("forward_args") or {},
            image_arg=data.get("image_arg"),
        )


@dataclass(frozen=True)
class State:
    version: str
    options: Options
    spec: BackboneSpec
    files: tuple[str, ...]  # generated files, relative to DIR

    def to_json(self) -> str:
        data = {
            "scaffold_version": self.version,
            "options": self.options.to_dict(),
            "files": list(self.files),
            "spec": self.spec.to_dict(),
        }
        return json.dumps(data, indent=2) + "\n"


def write_state(root: Path, state: State, pristine: dict[str, bytes]) -> None:
    """Write state.json and the pristine copies under `root`/.scaffold (root may be a temp dir)."""
    base = root / STATE_DIR
    (base / PRISTINE_DIR).mkdir(parents=True, exist_ok=True)
    for rel, content in pristine.items():
        path = base / PRISTINE_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (base / STATE_FILE).write_text(state.to_json(), encoding="utf-8")


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
            spec=BackboneSpec.from_dict(data["spec"]),
            files=tuple(data["files"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ScaffoldError(f"{path}: unreadable scaffold state ({exc})") from exc


def read_pristine(directory: Path, rel: str) -> bytes | None:
    path = directory / STATE_DIR / PRISTINE_DIR / rel
    return path.read_bytes() if path.is_file() else None


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold DIR's lock: a second scaffold process writing the same DIR is refused, not queued."""
    path = directory / STATE_DIR / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
