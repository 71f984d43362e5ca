"""Rung 0 of the ladder: the folder is what its benchmark YAML runs.

The generated YAML files name what is inside the folder (the package, the smoke data, the
results) relative to it, so a moved or copied folder runs where it is. A path that cannot be
relative (the Ray route's) or that an older scaffold or a hand edit wrote absolute still names
the old place: running it would run, and write into, another folder. A merge that left conflict
markers cannot import. Both are said here, with what to do, before anything is imported.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from scaffold.verify.types import CheckFailed, read_config
from scaffold.write.names import in_folder
from scaffold.write.state import State

OPENER = b"<<<<<<<"
CLOSER = b">>>>>>>"


def marker_lines(content: bytes) -> list[int]:
    """The (1-based) lines that open a conflict block, in a file that also closes one."""
    lines = content.splitlines()
    if not any(line.startswith(CLOSER) for line in lines):
        return []
    return [i for i, line in enumerate(lines, 1) if line.startswith(OPENER)]


def files_with_markers(directory: Path, files: Iterable[str]) -> list[str]:
    """Those of `files` (relative to `directory`) that hold conflict markers."""
    found = []
    for rel in files:
        path = directory / rel
        if path.is_file() and marker_lines(path.read_bytes()):
            found.append(rel)
    return found


def check_folder(directory: Path, state: State, config_path: Path) -> str:
    """Conflict markers, then the YAML's paths: the package and everything that was generated
    inside the folder must be inside it now."""
    name = state.options.name or ""
    candidates = sorted(
        {*state.files, *(str(p.relative_to(directory)) for p in _sources(directory, name))}
    )
    marked = []
    for rel in files_with_markers(directory, candidates):
        lines = marker_lines((directory / rel).read_bytes())
        marked.append(f"{rel} (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))})")
    if marked:
        raise CheckFailed(
            f"unresolved conflict markers in {'; '.join(marked)}: keep what you want between "
            "<<<<<<< ======= >>>>>>> and delete the marker lines"
        )

    config = read_config(config_path)
    again = f"this folder was moved or copied: run `scaffold update {shlex.quote(str(directory))}`"
    package = directory / name
    modules = config.get("custom_modules_path")
    if not modules:
        raise CheckFailed(f"{config_path.name} has no custom_modules_path (the package {package})")
    modules_path = in_folder(directory, modules).resolve()
    recorded = state.options.out.resolve() if state.options.out else None
    moved = recorded is not None and recorded != directory
    outside = not modules_path.is_relative_to(directory)
    if outside and moved and recorded and modules_path.is_relative_to(recorded):
        raise CheckFailed(
            f"{config_path.name}: custom_modules_path {modules} is outside {directory}: {again}"
        )
    if modules_path != package.resolve():  # edited by hand: update keeps hand edits
        raise CheckFailed(
            f"custom_modules_path {modules} in {config_path.name} is not this folder's package: "
            f"it was edited; set it back to {name} (relative to the folder)"
        )
    # Every generated YAML: a path that cannot be relative (the Ray route's) names the old place.
    others = sorted(f for f in state.files if f.endswith(".yaml") and f != config_path.name)
    for rel, content in [
        (config_path.name, config),
        *((f, _yaml_of(directory / f)) for f in others),
    ]:
        note = moved_note(directory, state, content)
        if note:
            raise CheckFailed(f"{rel}: {note}")
    return f"{config_path.name} runs {modules}; no conflict markers"


def _yaml_of(path: Path) -> Any:
    """A generated YAML's content; None when it does not parse (its own check says so)."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def moved_note(directory: Path, state: State, config: dict[str, Any]) -> str | None:
    """What to say when `config` (of the folder `directory`) still names the place the folder
    was generated in: it was moved or copied. None when it names none."""
    recorded = state.options.out.resolve() if state.options.out else None
    if recorded is None or recorded == directory:
        return None
    for key, value in _paths(config):
        if Path(value).resolve().is_relative_to(recorded):
            return (
                f"{key} {value} is in {recorded}, not in {directory}: this folder was moved or "
                f"copied: run `scaffold update {shlex.quote(str(directory))}`"
            )
    return None


def _sources(directory: Path, name: str) -> Iterator[Path]:
    """The package's Python files (a person may have added some)."""
    package = directory / name
    if name and package.is_dir():
        yield from (p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def _paths(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every absolute path in the config."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, f"{key}[{i}]")
    elif isinstance(value, str) and value.startswith("/"):
        yield key, value
