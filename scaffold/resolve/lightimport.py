"""Importing a model's module without first running the ``__init__`` of the packages above it.

``scaffold inspect terratorch.models.backbones.prithvi_mae:PrithviViT`` needs one file of
TerraTorch, but a plain import runs ``terratorch/__init__.py`` first, which imports Lightning,
the datasets and every backbone: 1.5 GiB of peak memory before the model is even built. Within
``parents_deferred()``, a ``package.module:Name`` target is imported with stand-ins for its parent
packages (empty modules with the packages' ``__path__``), so only what the module itself imports
runs. When that import fails (the module needs something its package's ``__init__`` sets up), the
stand-ins and everything imported under them are removed and the module is imported as usual.

On leaving the context, the stand-ins and the modules imported under them leave ``sys.modules``,
so that a later plain import in the same process runs the packages' ``__init__`` as usual.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

_roots: list[str] | None = None  # top-level packages stood in for; None: not deferring


@contextlib.contextmanager
def parents_deferred() -> Iterator[None]:
    global _roots
    outer, _roots = _roots, []
    try:
        yield
    finally:
        for root in _roots:
            _forget(root)
        _roots = outer


def import_lightly(dotted: str) -> Any | None:
    """`dotted` imported under stand-in parent packages, or None (not deferring, a parent is
    imported already, or the module needs its packages' ``__init__``)."""
    parts = dotted.split(".")
    if _roots is None or len(parts) < 2 or parts[0] in sys.modules:
        return None
    for i in range(1, len(parts)):
        _stand_in(".".join(parts[:i]))
    _roots.append(parts[0])
    try:
        return importlib.import_module(dotted)
    except Exception:  # the person's module: it needs its packages' __init__, or fails anyway
        _forget(parts[0])
        if parts[0] in _roots:
            _roots.remove(parts[0])
        return None


def _stand_in(name: str) -> None:
    parent_name, _, short = name.rpartition(".")
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent_name:
        spec = importlib.machinery.PathFinder.find_spec(name, parent.__path__)  # type: ignore[union-attr]
    else:
        spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not a package")
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    module.__package__ = name
    sys.modules[name] = module
    if parent is not None:
        setattr(parent, short, module)


def _forget(root: str) -> None:
    for name in [m for m in sys.modules if m == root or m.startswith(root + ".")]:
        del sys.modules[name]
