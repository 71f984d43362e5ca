"""terratorch-iterate's Ray route: ``benchmark_ray.yaml``, derived from the rendered ``benchmark.yaml``.

``python -m terratorch_iterate.benchmark_ray --config FILE`` runs trials as Ray tasks. Its parser
takes ``backbone_import`` (a module name, imported on the driver and in every Ray worker) and
``tmp_dir`` (Ray's temporary folder), and rejects ``custom_modules_path``. Everything else (tasks,
defaults, search space, trials, storage) is the classic config's, so the Ray config is made from the
text of ``benchmark.yaml`` as rendered: its top-level entries are kept as they are, comments
included, and only the route keys change. Whatever produces the tasks, the two stay in step.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from scaffold.render.dump import dump
from scaffold.write.names import CONFIG_FILE, RAY_CONFIG_FILE

# Route keys: the classic route's, and the Ray route's (ray_storage_path is read by both).
# run_repetitions: the Ray route's CLI takes no such argument (it has no --repeat).
CLASSIC_ONLY_KEYS = ("custom_modules_path", "run_repetitions")
RAY_KEYS = ("backbone_import", "tmp_dir", "ray_storage_path")
# terratorch-iterate 0.4 asks this much of Ray for every trial (hard-coded in benchmark_ray.py
# and model_fitting.py).
TRIAL_RESOURCES = {"CPU": 8, "GPU": 1}

# Unix socket paths are at most 107 bytes on Linux (103 on macOS), and a Ray instance that the
# driver starts puts its sockets at <tmp_dir>/session_<date>_<time>_<microseconds>_<pid>/sockets/:
# a longer tmp_dir fails in ray.init ("AF_UNIX path length cannot exceed 107 bytes").
SOCKET_PATH_MAX = 107
RAY_SOCKET_SUFFIX = os.path.join(
    "session_2026-01-01_00-00-00_000000_4194304", "sockets", "plasma_store"
)

_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*):")
# A one-line entry of the classic config that names a path inside the output folder, relative to
# it: the storage, a datamodule's *_root or *_split.
_PATH_LINE = re.compile(r"^( *)(storage_uri|ray_storage_path|(?:\w+_)?(?:root|split)): (\S.*)$")


def route_values(out: Path, package: str) -> dict[str, str]:
    """The Ray route's keys for the output folder `out` whose package is `package`.

    ``tmp_dir`` is ``out/runs/ray_tmp`` where Ray's socket paths under it fit; under a deeper
    `out` it is ``ray_<package>`` in the system's temporary folder, which Ray can use.
    """
    tmp_dir = out / "runs" / "ray_tmp"
    if not ray_sockets_fit(str(tmp_dir)):
        tmp_dir = Path(tempfile.gettempdir()) / f"ray_{package}"
    return {
        "backbone_import": package,
        "tmp_dir": str(tmp_dir),
        "ray_storage_path": str(out / "runs" / "ray"),
    }


def ray_socket_example(tmp_dir: str) -> str:
    """The longest socket path a Ray instance started with `tmp_dir` makes (about)."""
    return os.path.join(tmp_dir, RAY_SOCKET_SUFFIX)


def ray_sockets_fit(tmp_dir: str) -> bool:
    return len(ray_socket_example(tmp_dir).encode()) <= SOCKET_PATH_MAX


def ray_config_text(classic: str, values: dict[str, str], header: str) -> str:
    """The Ray config: `classic` (the text of benchmark.yaml) with the route keys swapped.

    The classic file's opening comment block gives way to `header`; ``custom_modules_path`` (and
    the comment above it) to ``backbone_import`` and ``tmp_dir``; ``ray_storage_path`` is set.
    """
    preamble, blocks = _top_level_blocks(classic)
    del preamble  # the classic file's own opening comments: how to run *that* file
    keys = [key for key, _ in blocks]
    if "custom_modules_path" not in keys:
        raise RuntimeError(f"the rendered benchmark config has no custom_modules_path: {keys}")
    out_blocks: list[str] = []
    for key, text in blocks:
        if key == "custom_modules_path":
            out_blocks.append(
                "# The package that registers the backbone and its factory, imported by name on\n"
                "# the driver and in every Ray worker (pip install the folder on every node).\n"
                + _dump({"backbone_import": values["backbone_import"]})
                + "# Ray's temporary folder (RAY_TMPDIR): sockets, logs, spilled objects. Keep it\n"
                + "# short: Ray's Unix sockets under it must stay within 107 bytes.\n"
                + _dump({"tmp_dir": values["tmp_dir"]})
            )
        elif key == "ray_storage_path":
            out_blocks.append(_replace_value(text, key, values["ray_storage_path"]))
        elif key in CLASSIC_ONLY_KEYS:
            continue
        else:
            out_blocks.append(text)
    if "ray_storage_path" not in keys:
        out_blocks.append(
            "# Ray Tune's results (and saved models) per trial.\n"
            + _dump({"ray_storage_path": values["ray_storage_path"]})
        )
    text = header.rstrip("\n") + "\n" + "".join(out_blocks)
    expected = derived_mapping(yaml.safe_load(classic), values)
    if yaml.safe_load(text) != expected:  # the text surgery went wrong: fall back to plain YAML
        text = header.rstrip("\n") + "\n" + _dump(expected)
    return text


def derived_mapping(classic: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """What the Ray config must parse to: the classic mapping with the route keys swapped."""
    out: dict[str, Any] = {}
    for key, value in classic.items():
        if key == "custom_modules_path":
            out["backbone_import"] = values["backbone_import"]
            out["tmp_dir"] = values["tmp_dir"]
        elif key not in CLASSIC_ONLY_KEYS:
            out[key] = value
    out["ray_storage_path"] = values["ray_storage_path"]
    return out


def route_difference(classic: dict[str, Any], ray: dict[str, Any]) -> set[str]:
    """Top-level keys where the two configs differ (a key in one only counts too)."""
    return {k for k in classic.keys() | ray.keys() if classic.get(k) != ray.get(k)}


def _top_level_blocks(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split block-style YAML into (opening comments, [(key, text)]): a top-level entry's text
    is its comment lines above it, its key line and every indented line after it."""
    lines = text.splitlines(keepends=True)
    blocks: list[tuple[str, str]] = []
    pending: list[str] = []  # comments and blank lines waiting for the next key
    preamble = ""
    current: tuple[str, list[str]] | None = None
    for line in lines:
        match = _TOP_KEY.match(line)
        if match:
            if current is not None:
                blocks.append((current[0], "".join(current[1])))
            elif not blocks:
                preamble, pending = "".join(pending), []
            current = (match.group(1), [*pending, line])
            pending = []
        elif line.startswith(("#", "\n")) or not line.strip():
            pending.append(line)
        elif current is not None:  # an indented continuation (or a list item of the entry)
            current[1].extend([*pending, line])
            pending = []
        else:
            raise RuntimeError(f"unexpected line before the first key: {line!r}")
    if current is not None:
        current[1].extend(pending)
        blocks.append((current[0], "".join(current[1])))
    return preamble, blocks


def _replace_value(block: str, key: str, value: str) -> str:
    """A one-line `key: value` entry with a new value (its comments kept)."""
    lines = block.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(f"{key}:"):
            lines[i] = _dump({key: value})
            return "".join(lines[: i + 1]) + "".join(
                rest for rest in lines[i + 1 :] if rest.startswith("#") or not rest.strip()
            )
    return block


def _dump(value: dict[str, Any]) -> str:
    return dump(value) + "\n"


def ray_header(generated: str, out: Path, package: str) -> str:
    config = out / RAY_CONFIG_FILE
    cpus, gpus = TRIAL_RESOURCES["CPU"], TRIAL_RESOURCES["GPU"]
    return (
        f"{generated}\n"
        f"# terratorch-iterate's Ray route for the backbone `{package}`: the tasks, search space and\n"
        "# trials of benchmark.yaml, with the package imported by name (backbone_import) in place of\n"
        "# custom_modules_path, and every path absolute (Ray runs each trial in a folder of its own\n"
        "# and takes no relative storage): after a move, `scaffold update` re-points them.\n"
        "# First `pip install` this folder on every node, then run:\n"
        f"#   MLFLOW_ALLOW_FILE_STORE=true python -m terratorch_iterate.benchmark_ray --config {_quoted(config)}\n"
        f"# Every trial asks Ray for {cpus} CPUs and {gpus} GPU (fixed in terratorch-iterate 0.4): where no\n"
        "# node has that much, the trial stays PENDING. `scaffold update` carries generated changes of\n"
        "# benchmark.yaml over here; hand edits to benchmark.yaml (real tasks) are yours to copy.\n"
    )


def anchored(classic: str, out: Path) -> str:
    """The classic config's text with each path it names relative to the output folder `out`
    made absolute. The Ray route cannot take relative ones: Ray runs each trial in a folder of
    its own (on any node) and wants absolute storage and temporary folders; so this file, unlike
    benchmark.yaml, names `out`, and `scaffold update` re-points it when the folder moves."""
    lines = []
    for line in classic.splitlines(keepends=True):
        match = _PATH_LINE.match(line.rstrip("\n"))
        value = yaml.safe_load(match.group(3)) if match else None
        if match and isinstance(value, str) and value and not Path(value).is_absolute():
            line = match.group(1) + _dump({match.group(2): str(out / value)})
        lines.append(line)
    return "".join(lines)


def anchored_mapping(classic: dict[str, Any], out: Path) -> dict[str, Any]:
    """benchmark.yaml's mapping with its paths made absolute under `out`, as `anchored` does."""
    mapping: dict[str, Any] = yaml.safe_load(anchored(_dump(classic), out))
    return mapping


def write_ray_config(dest: Path, out: Path, package: str, generated_header: str) -> None:
    """Write RAY_CONFIG_FILE beside the rendered benchmark.yaml in `dest` (paths under `out`)."""

    classic = anchored((dest / CONFIG_FILE).read_text(encoding="utf-8"), out)
    text = ray_config_text(
        classic, route_values(out, package), ray_header(generated_header, out, package)
    )
    (dest / RAY_CONFIG_FILE).write_text(text, encoding="utf-8")


def _quoted(path: Path) -> str:
    import json

    return json.dumps(str(path))
