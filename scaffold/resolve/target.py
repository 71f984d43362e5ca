"""Resolve a TARGET string to the class or builder function that makes the model.

TARGET is ``path/to/file.py`` (the model class is picked), ``path/to/file.py:Name`` or
``package.module:Name``; Name is a class or a function. A file inside a package (one with
``__init__.py`` beside it) is imported by its dotted name from the package root, so relative
imports such as torchvision's ``from ..utils import x`` work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import yaml

from scaffold.errors import ScaffoldError, one_line
from scaffold.resolve.lightimport import import_lightly

if TYPE_CHECKING:
    from scaffold.resolve.static import FileAnalysis, ModuleClass


@dataclass(frozen=True)
class ResolvedTarget:
    target: str
    module: str  # dotted module name
    import_root: Path | None  # folder to put on sys.path first; None when already importable
    source_file: Path | None
    name: str
    obj: Any  # the class or the builder function
    kind: Literal["class", "function"]
    static: FileAnalysis | None = None  # libcst's view of the file, for file targets


class _ValueLoader(yaml.SafeLoader):
    """YAML, except that numbers written the way Python writes them are numbers: YAML 1.1 reads
    ``1e-3`` (no dot) as a string, Python as a float."""


_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_value(raw: str) -> Any:
    """A command-line VALUE as YAML, with Python's float syntax (``1e-3``) read as a number."""
    return yaml.load(raw, Loader=_ValueLoader)  # noqa: S506 (a SafeLoader)


def parse_args(pairs: list[str] | None) -> dict[str, Any]:
    """``["depths=[2,2,6,2]", "in_chans=6"]`` -> ``{"depths": [2, 2, 6, 2], "in_chans": 6}``.

    Values are YAML, and ``1e-3`` is a float as in Python."""
    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ScaffoldError(f"--arg {pair!r}: expected NAME=VALUE, e.g. --arg in_chans=6")
        try:
            args[key] = load_value(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise ScaffoldError(f"--arg {pair!r}: the value is not valid YAML ({first})") from exc
        if not _plain(args[key]):
            raise ScaffoldError(
                f"--arg {pair!r}: only numbers, strings, booleans, null, lists and mappings "
                f"are supported (this is a {type(args[key]).__name__}; quote it for a string)"
            )
    return args


def _plain(value: Any) -> bool:
    """JSON's types: what a spec and the generated Python can hold as literals."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """``"6,64,64"`` -> (6, 64, 64); ``"6,4,64,64"`` -> (6, 4, 64, 64) (C,H,W or C,T,H,W)."""
    if text is None:
        return None
    try:
        dims = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) not in (3, 4) or any(d <= 0 for d in dims):
        raise ScaffoldError(
            f"--input-shape {text!r}: expected C,H,W or C,T,H,W with positive integers, e.g. 6,64,64"
        )
    if min(dims[-2:]) < MIN_SIDE:
        raise ScaffoldError(
            f"--input-shape {text!r}: H and W must be at least {MIN_SIDE}; reductions are "
            f"measured from how much smaller each feature map is than the input, e.g. 6,64,64"
        )
    return dims


def parse_forward_args(pairs: list[str] | None) -> dict[str, Any]:
    """``["wavelengths=[0.49, 0.56]", "x_dict.chn_ids=[1, 2]"]`` -> a dict of YAML values."""
    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not _dotted(key):
            raise ScaffoldError(
                f"--forward-arg {pair!r}: expected NAME=VALUE or PARAM.KEY=VALUE, "
                "e.g. --forward-arg wavelengths=[0.49,0.56,0.665]"
            )
        try:
            args[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise ScaffoldError(
                f"--forward-arg {pair!r}: the value is not valid YAML ({first})"
            ) from exc
    return args


def check_image_arg(image_arg: str | None) -> str | None:
    if image_arg is not None and not _dotted(image_arg):
        raise ScaffoldError(f"--image-arg {image_arg!r}: expected NAME or PARAM.KEY, e.g. x")
    return image_arg


def _dotted(key: str) -> bool:
    parts = key.split(".")
    return 1 <= len(parts) <= 2 and all(p.isidentifier() for p in parts)


# The smallest height and width an --input-shape may have: a few stride-2 stages must still
# leave maps larger than 1x1, or every reduction reads as 1 and pooling cannot be told apart.
MIN_SIDE = 16


def split_target(target: str) -> tuple[str, str | None]:
    """``"a/b.py:Net"`` -> ("a/b.py", "Net"); ``"pkg.mod:Net"`` -> ("pkg.mod", "Net")."""
    head, sep, name = target.rpartition(":")
    if sep and head and name.isidentifier():  # a colon inside a path is not a separator
        return head, name
    return target, None


def is_file_target(where: str) -> bool:
    """``path/to/file.py`` rather than ``package.module``."""
    return where.endswith(".py") or "/" in where or Path(where).exists()


def resolve_target(target: str) -> ResolvedTarget:
    """Import what TARGET names and return the class or function that builds the model."""
    where, name = split_target(target)
    if is_file_target(where):
        return _resolve_file(target, Path(where), name)
    if name is None:
        raise ScaffoldError(
            f"{target}: expected path/to/file.py, path/to/file.py:Name or package.module:Name"
        )
    return _resolve_module(target, where, name)


def source_class(resolved: ResolvedTarget) -> ModuleClass | None:
    """What the source shows of the resolved class (constructor parameters, hooks it defines),
    read with libcst; None for a builder function or a class without a source file."""
    if resolved.source_file is None or resolved.kind != "class":
        return None
    from scaffold.resolve.static import analyse_file

    static = resolved.static or analyse_file(resolved.source_file)
    return static.get(resolved.name)


def check_target_exists(target: str) -> None:
    """The cheap part of resolving: a file target names an existing file (not a directory)."""
    where, _ = split_target(target)
    if is_file_target(where):
        check_file(Path(where))


def check_file(path: Path) -> None:
    if path.is_dir():
        raise ScaffoldError(
            f"{path}: is a directory; name the model's file (path/to/model.py[:Name]) "
            "or its module (package.module:Name)"
        )
    if not path.is_file():
        raise ScaffoldError(f"{path}: no such file")


def _resolve_file(target: str, path: Path, name: str | None) -> ResolvedTarget:
    check_file(path)  # before libcst is imported: a wrong path is said at once
    from scaffold.resolve.static import analyse_file

    path = path.resolve()
    analysis = analyse_file(path)  # syntax errors surface here, with file and line
    if name is None and analysis.classes:
        name = _pick_class(path, [c.name for c in analysis.model_candidates() or analysis.classes])
    root, dotted = package_root(path)
    stamp = (path, path.stat().st_mtime_ns)
    if dotted in _loaded_from_files and _loaded_from_files[dotted] != stamp:
        # Loaded by scaffold before, from another file or before an edit: import it anew.
        sys.modules.pop(dotted, None)
    module = _import(dotted, root, where=str(path))
    _loaded_from_files[dotted] = stamp
    if _file_of(module) != path:
        raise ScaffoldError(
            f"{path}: importing it as '{dotted}' finds {_file_of(module)} instead; rename the file"
        )
    if name is None:
        # No class here derives from nn.Module as far as the source shows (say, from a model
        # imported from another package): ask the imported module.
        name = _pick_class(path, _module_classes_in(module))
    resolved = _finish(target, module, dotted, root, path, name, analysis.classes)
    return dataclasses.replace(resolved, static=analysis)


# Modules this process imported from a file path, with the file and its mtime at the time.
_loaded_from_files: dict[str, tuple[Path, int]] = {}


def _file_of(module) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _resolve_module(target: str, dotted: str, name: str) -> ResolvedTarget:

    with neutral_argv(dotted):
        module = import_lightly(dotted)
    module = module or _import(dotted, None, where=dotted)
    file = getattr(module, "__file__", None)
    return _finish(target, module, dotted, None, Path(file) if file else None, name, ())


def _finish(target, module, dotted, root, path, name, classes) -> ResolvedTarget:
    import torch

    obj = getattr(module, name, None)
    where = str(path) if path else dotted
    if obj is None:
        known = ", ".join(c.name for c in classes) or ", ".join(_module_classes_in(module))
        hint = f" (nn.Module classes there: {known})" if known else ""
        raise ScaffoldError(f"{where}: no class or function named '{name}'{hint}")
    if isinstance(obj, torch.nn.Module):
        raise ScaffoldError(
            f"{where}: '{name}' is a model instance; name its class or a function that builds it"
        )
    if inspect.isclass(obj):
        if not issubclass(obj, torch.nn.Module):
            raise ScaffoldError(f"{where}: '{name}' is a class but not a torch.nn.Module")
        kind: Literal["class", "function"] = "class"
    elif callable(obj):
        kind = "function"
    else:
        raise ScaffoldError(f"{where}: '{name}' is neither an nn.Module class nor a function")
    return ResolvedTarget(target, dotted, root, path, name, obj, kind)


def _pick_class(path: Path, candidates: list[str]) -> str:
    if not candidates:
        raise ScaffoldError(f"{path}: defines no torch.nn.Module subclass")
    if len(candidates) > 1:
        raise ScaffoldError(
            f"{path}: several classes could be the model ({', '.join(candidates)}); "
            f"name one as {path.name}:Name"
        )
    return candidates[0]


def package_root(path: Path) -> tuple[Path, str]:
    """The folder to put on sys.path and the dotted name under which `path` imports from it."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if parts[-1] == "__init__":
        parts.pop()
    return folder, ".".join(parts)


@contextlib.contextmanager
def neutral_argv(where: str) -> Iterator[None]:
    """While a person's module is imported: ``sys.argv`` holds only its path (a training script
    that parses the command line at import reads no option of scaffold's), what it prints goes to
    stderr (``--json`` keeps stdout to itself), and a ``SystemExit`` (argparse refusing options
    it requires) is one ScaffoldError naming the file, with the last line it printed (what it
    wrote to stderr is held until the import ends, and shown unless it exited)."""
    saved, sys.argv = sys.argv, [where]
    held = _HeldStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr), contextlib.redirect_stderr(held):
            yield
    except SystemExit as exc:
        lines = [line for line in held.release(show=False).splitlines() if line.strip()]
        last = f" ({lines[-1].strip()})" if lines else ""
        raise ScaffoldError(
            f"{where}: importing it exited (SystemExit {exc.code}){last}: the module parses the "
            'command line when imported; move that under `if __name__ == "__main__":`'
        ) from None
    finally:
        sys.argv = saved
        held.release()


class _HeldStream:
    """A stream that holds what is written until `release`, then writes through to `real` (a
    logging handler made during the import keeps a stream that works afterwards)."""

    def __init__(self, real: TextIO) -> None:
        self._real = real
        self._held: list[str] | None = []

    def write(self, text: str) -> int:
        if self._held is None:
            return self._real.write(text)
        self._held.append(text)
        return len(text)

    def flush(self) -> None:
        if self._held is None:
            self._real.flush()

    def release(self, show: bool = True) -> str:
        """End holding; write what was held to the real stream when `show`; return it."""
        text, self._held = "".join(self._held or []), None
        if show and text:
            self._real.write(text)
        return text

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _import(dotted: str, root: Path | None, where: str):
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        with neutral_argv(where):
            return importlib.import_module(dotted)
    except ScaffoldError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (dotted == exc.name or dotted.startswith(exc.name + ".")):
            raise ScaffoldError(f"{where}: no module named '{exc.name}'") from exc
        raise ScaffoldError(f"{where}: importing it failed: {one_line(exc)}") from exc
    except Exception as exc:  # the person's module raised while importing
        raise ScaffoldError(f"{where}: importing it failed: {one_line(exc)}") from exc


def _module_classes_in(module) -> list[str]:
    """The nn.Module subclasses that `module` itself defines."""
    import torch

    return [
        n
        for n, v in vars(module).items()
        if inspect.isclass(v) and issubclass(v, torch.nn.Module) and v.__module__ == module.__name__
    ]


@dataclass(frozen=True)
class TapRequest:
    """One tensor named by ``--taps``, as `scaffold inspect` prints it: ``MODULE`` (its output),
    ``MODULE[KEY]`` (an item of what it returns), ``input of MODULE`` (what enters it), each
    with `` (call N)`` after the module for its N-th call (from 0)."""

    text: str
    module: str
    call: int = 0
    key: Any = None  # an index, a dict key, or a tuple of them (a path into nested items)
    input: bool = False


_TAP = re.compile(
    r"^(?P<input>input of\s+)?(?P<module>\w+(?:\.\w+)*)"
    r"(?:\s*\(call\s+(?P<call>\d+)\))?(?:\[(?P<key>.+)\])?$"
)


def parse_tap(text: str) -> TapRequest:
    """One ``--taps`` item; a ScaffoldError names an item that is none of the forms."""
    import ast

    found = _TAP.match(text.strip())
    if found is None:
        raise ScaffoldError(
            f"--taps {text!r}: expected MODULE, MODULE[KEY], input of MODULE or MODULE (call N), "
            "as `scaffold inspect` prints them, e.g. --taps stages.0,stages.1"
        )
    key: Any = None
    if found["key"] is not None:
        try:
            key = ast.literal_eval(found["key"])
        except (ValueError, SyntaxError) as exc:
            raise ScaffoldError(
                f"--taps {text!r}: the key [{found['key']}] is not an index or a quoted name"
            ) from exc
        if found["input"]:
            raise ScaffoldError(f"--taps {text!r}: what enters a module has no items to pick")
    call = int(found["call"]) if found["call"] else 0
    return TapRequest(text.strip(), found["module"], call, key, bool(found["input"]))


def parse_taps(text: str | None) -> tuple[str, ...] | None:
    """``--taps a,b[0],input of c`` -> ("a", "b[0]", "input of c"), each item checked (commas
    inside brackets and parentheses belong to the item); None when not given."""
    if text is None:
        return None
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += 1 if ch in "[(" else -1 if ch in "])" else 0
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    taps = tuple(t.strip() for t in items if t.strip())
    if not taps:
        raise ScaffoldError("--taps: no module given (e.g. --taps stages.0,stages.1)")
    for tap in taps:
        parse_tap(tap)
    if len(set(taps)) < len(taps):
        raise ScaffoldError(f"--taps {text!r}: a tensor is named twice")
    return taps
