"""The backbone's name: the requested one checked, or a free default from the class name; where the
model's module lives (so that the package can import it and a name does not shadow it)."""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import keyword
import re
import unicodedata
from pathlib import Path

from scaffold.errors import ScaffoldError
from scaffold.resolve.target import is_file_target, package_root, split_target
from scaffold.write.names import names_for, output_folders
from scaffold.write.state import is_generated


def absolute_target(target: str) -> str:
    """A file target with an absolute path, so that the state works from any directory."""

    where, name = split_target(target)
    if is_file_target(where):
        where = str(Path(where).resolve())
    return f"{where}:{name}" if name else where


def taken_names() -> tuple[set[str], set[str], set[str]]:
    """The backbone names timm and TerraTorch already have, and TerraTorch's factory names."""
    import timm
    from terratorch.registry import MODEL_FACTORY_REGISTRY, TERRATORCH_BACKBONE_REGISTRY

    return (
        set(timm.list_models()),
        set(TERRATORCH_BACKBONE_REGISTRY),
        set(MODEL_FACTORY_REGISTRY),
    )


def model_module(target: str) -> str:
    """The dotted module TARGET names, without importing it."""

    where, _ = split_target(target)
    return package_root(Path(where).resolve())[1] if is_file_target(where) else where


def model_import_root(target: str) -> Path | None:
    """The folder the generated package puts on ``sys.path`` for the model (None: installed)."""

    where, _ = split_target(target)
    return package_root(Path(where).resolve())[0] if is_file_target(where) else None


def _holds_modules(spec, out: Path | None) -> bool:
    """Whether the module `spec` finds is Python a package by its name would hide. Any directory
    is a namespace package to the import system; one counts only when it holds Python to
    import: an empty one, the output folder itself or an earlier output of scaffold hide
    nothing the model uses."""
    if spec is None:
        return False
    if spec.origin is not None:  # a module or a regular package
        return True
    suffixes = tuple(importlib.machinery.all_suffixes())
    for location in spec.submodule_search_locations or ():
        folder = Path(location)
        if (out is not None and folder.resolve() == out.resolve()) or is_generated(folder):
            continue
        with contextlib.suppress(OSError):
            for entry in folder.iterdir():
                if entry.is_file() and entry.name.endswith(suffixes):
                    return True
                if entry.is_dir() and entry.name.isidentifier() and _holds_python(entry, suffixes):
                    return True
    return False


def _holds_python(folder: Path, suffixes: tuple[str, ...]) -> bool:
    """A subpackage: a folder with Python files of its own (one level: not a dataset walk)."""
    with contextlib.suppress(OSError):
        return any(p.is_file() and p.name.endswith(suffixes) for p in folder.iterdir())
    return False


def choose_name(
    requested: str | None,
    spec=None,
    module: str | None = None,
    root: Path | None = None,
    out: Path | None = None,
) -> str:
    """The requested name, checked, or a free default from the spec's class name. `module`
    (the model's module) and `root` (its import folder) stand in for the spec when only a
    requested name is checked; `out` is the output folder (which may sit beside the model)."""

    timm_names, terratorch_names, factory_names = taken_names()
    module = module or spec.module
    if root is None and spec is not None and spec.import_root:
        root = Path(spec.import_root)
    model_top = module.split(".")[0]
    folders = output_folders()

    def problem(name: str) -> str | None:
        if name in folders:
            return (
                f"is the name of a folder scaffold writes in the output folder beside the "
                f"package ({', '.join(folders)})"
            )
        if name in timm_names:
            return "is already a timm model"
        if name in terratorch_names:
            return "is already a TerraTorch backbone"
        if names_for(name).factory_class in factory_names:
            return f"would register {names_for(name).factory_class}, which TerraTorch already has"
        if name == model_top:
            return f"is the name of the model's own module ({module})"
        # The package goes first on sys.path: it would shadow a module beside the model.
        where = out if out is not None else Path.cwd() / name
        beside = (
            None if root is None else importlib.machinery.PathFinder.find_spec(name, [str(root)])
        )
        if _holds_modules(beside, where):
            return (
                f"is the name of a module in the model's folder {root}, which the package "
                "would hide"
            )
        if _holds_modules(importlib.util.find_spec(name), where):
            return "is the name of an installed Python module"
        return None

    if requested is not None:  # its syntax was checked before the analysis
        why = problem(requested)
        if why:
            raise ScaffoldError(f"--name {requested!r} {why}; choose another name")
        return requested
    base = default_name(spec.qualname)
    for candidate in (base, f"{base}_backbone", f"{base}_scaffold"):
        if not candidate.startswith(("timm_", "terratorch_")) and problem(candidate) is None:
            return candidate
    raise ScaffoldError(f"no free default name for {spec.qualname}; pass --name")


def default_name(qualname: str) -> str:
    """``SwinTransformer3D`` -> ``swin_transformer3d``, ``TinyViT`` -> ``tinyvit``,
    ``SmallCNN`` -> ``small_cnn``; ``resnet18`` stays."""
    words = r"(?<=[A-Za-z0-9])(?=[A-Z][a-z]{2,})"  # before a capitalised word
    acronym = r"(?<=[a-z])(?=[A-Z]{2,}(?:[^a-z]|$))"  # before a final acronym
    snake = re.sub(f"{words}|{acronym}", "_", qualname).lower()
    snake = re.sub(r"\W+", "_", snake).strip("_")
    return snake if snake.isidentifier() else f"model_{snake}"


def check_name_syntax(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ScaffoldError(f"--name {name!r}: must be a Python identifier (letters, digits, _)")
    normal = unicodedata.normalize("NFKC", name)
    if normal != name:  # Python reads identifiers NFKC-normalised: `import ﬁnet` imports finet
        raise ScaffoldError(f"--name {name!r}: Python reads this name as {normal!r}; use that")
    if not names_for(name).backbone_class.removesuffix("Backbone")[:1].isalpha():
        raise ScaffoldError(
            f"--name {name!r}: needs a letter after its underscores, to name the classes "
            "(--name my_net gives MyNetBackbone and MyNetFactory)"
        )
    if name.startswith(("timm_", "terratorch_")):
        raise ScaffoldError(
            f"--name {name!r}: TerraTorch reads a leading 'timm_' or 'terratorch_' as a registry "
            "prefix; choose another name"
        )
