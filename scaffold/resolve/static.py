"""Static analysis of a model file with libcst: its nn.Module classes, what they take and what they have.

Nothing here imports or runs the person's code. The result explains errors (a syntax error with its
line, a file without any nn.Module), picks the model class in a file that defines several, says
whether the class already has timm's feature hooks, and records its constructor parameters as
written (defaults and annotations), which the spec reports.
"""

from __future__ import annotations

import ast
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from scaffold.errors import ScaffoldError

MODULE_BASES = frozenset({"torch.nn.Module", "torch.nn.modules.module.Module"})
# Methods whose presence means the class already speaks timm's feature protocol.
HOOK_NAMES = ("feature_info", "prepare_features_for_image_model", "forward_intermediates")


@dataclass(frozen=True)
class Param:
    name: str
    default: str | None  # source text of the default, None when the parameter has none
    annotation: str | None
    kind: str  # "positional", "keyword", "var_positional", "var_keyword"


@dataclass(frozen=True)
class ModuleClass:
    name: str
    line: int
    bases: tuple[str, ...]  # qualified names where they resolve
    init_params: tuple[Param, ...]
    forward_params: tuple[Param, ...]
    has: frozenset[str]  # which of HOOK_NAMES the class defines
    parts: frozenset[str]  # module classes of this file that the class mentions (its parts)


@dataclass(frozen=True)
class FileAnalysis:
    path: Path
    classes: tuple[ModuleClass, ...]
    functions: tuple[str, ...] = field(default_factory=tuple)

    def get(self, name: str) -> ModuleClass | None:
        return next((c for c in self.classes if c.name == name), None)

    def model_candidates(self) -> list[ModuleClass]:
        """The nn.Module classes that no other class here uses as a part or as a base."""
        used = set().union(*(c.parts for c in self.classes)) if self.classes else set()
        bases = {b.rsplit(".", 1)[-1] for c in self.classes for b in c.bases}
        return [c for c in self.classes if c.name not in used and c.name not in bases]


def read_source(path: Path) -> str:
    """The text of a Python file decoded as Python decodes it: a PEP 263 coding cookie
    (``# -*- coding: latin-1 -*-``) or a UTF-8 BOM, else UTF-8."""
    try:
        with tokenize.open(path) as f:
            return f.read()
    except SyntaxError as exc:  # an unknown encoding in the cookie, or a BOM that contradicts it
        raise ScaffoldError(f"{path}: cannot read it ({exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ScaffoldError(f"{path}: cannot read it ({exc})") from exc


def analyse_file(path: Path) -> FileAnalysis:
    """Parse `path` and describe every nn.Module subclass it defines (directly or through a base here)."""
    source = read_source(path)
    try:  # Python's own parser names the line and the reason best
        module = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ScaffoldError(f"{path}:{exc.lineno}:{exc.offset}: syntax error: {exc.msg}") from exc
    try:
        tree = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        reason = str(exc).splitlines()[0]
        raise ScaffoldError(
            f"{path}:{exc.raw_line}:{exc.raw_column + 1}: syntax error: {reason}"
        ) from exc
    lines = {n.name: n.lineno for n in module.body if isinstance(n, ast.ClassDef)}
    collector = _ClassCollector(lines)
    tree.visit(collector)
    return FileAnalysis(
        path=path, classes=_module_classes(collector), functions=collector.functions
    )


@dataclass
class _RawClass:
    name: str
    line: int
    bases: tuple[str, ...]
    init_params: tuple[Param, ...] = ()
    forward_params: tuple[Param, ...] = ()
    has: set[str] = field(default_factory=set)
    calls: set[str] = field(default_factory=set)


class _ClassCollector(cst.CSTVisitor):
    """Collects top-level classes: bases (qualified through the file's imports), methods, and
    the names their bodies mention."""

    def __init__(self, lines: dict[str, int]) -> None:
        self.classes: list[_RawClass] = []
        self.functions: tuple[str, ...] = ()
        self._lines = lines
        self._aliases: dict[str, str] = {}  # local name -> dotted name it was imported as
        self._stack: list[_RawClass] = []
        self._depth = 0

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            dotted = _dotted(alias.name)
            if alias.asname is not None:
                self._aliases[_dotted(alias.asname.name)] = dotted
            else:  # `import torch.nn` binds `torch`
                self._aliases[dotted.split(".")[0]] = dotted.split(".")[0]

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            return
        origin = "." * len(node.relative) + (_dotted(node.module) if node.module else "")
        for alias in node.names:
            name = _dotted(alias.name)
            local = _dotted(alias.asname.name) if alias.asname is not None else name
            self._aliases[local] = f"{origin}.{name}" if not origin.endswith(".") else origin + name

    def qualify(self, dotted: str) -> str:
        """`nn.Module` -> `torch.nn.Module` when the file did `from torch import nn`."""
        head, _, rest = dotted.partition(".")
        if head in self._aliases:
            return self._aliases[head] + (f".{rest}" if rest else "")
        return dotted

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if self._depth == 0 and not self._stack:
            self.functions += (node.name.value,)
        self._depth += 1
        if len(self._stack) == 1 and self._depth == 1:
            cls = self._stack[0]
            name = node.name.value
            if name == "__init__":
                cls.init_params = _params(node.params, skip_first=True)
            elif name == "forward":
                cls.forward_params = _params(node.params, skip_first=True)
            if name in HOOK_NAMES:
                cls.has.add(name)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._depth -= 1

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        if self._stack or self._depth:
            self._stack.append(_RawClass(node.name.value, 0, ()))  # nested: tracked, not reported
            return
        bases = tuple(self.qualify(_dotted(arg.value)) for arg in node.bases)
        line = self._lines.get(node.name.value, 0)
        self._stack.append(_RawClass(node.name.value, line, bases))

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        cls = self._stack.pop()
        if not self._stack and cls.line:
            self.classes.append(cls)

    def visit_Assign(self, node: cst.Assign) -> None:
        # `feature_info = ...` in the class body or `self.feature_info = ...` in a method.
        if not self._stack:
            return
        for target in node.targets:
            if _dotted(target.target) in ("feature_info", "self.feature_info"):
                self._stack[0].has.add("feature_info")

    def visit_Name(self, node: cst.Name) -> None:
        # Any mention counts: `Block(...)`, `block=Block` as a default, `layer_cls = Block`.
        if self._stack:
            self._stack[0].calls.add(node.value)


def _module_classes(collector: _ClassCollector) -> tuple[ModuleClass, ...]:
    by_name = {c.name: c for c in collector.classes}

    def is_module(cls: _RawClass, seen: frozenset[str] = frozenset()) -> bool:
        for base in cls.bases:
            if base in MODULE_BASES or base.endswith("nn.Module"):
                return True
            local = by_name.get(base.rsplit(".", 1)[-1]) if "." not in base else None
            if local and local.name not in seen and is_module(local, seen | {cls.name}):
                return True
        return False

    modules = [c for c in collector.classes if is_module(c)]
    module_names = {c.name for c in modules}
    return tuple(
        ModuleClass(
            name=c.name,
            line=c.line,
            bases=c.bases,
            init_params=c.init_params,
            forward_params=c.forward_params,
            has=frozenset(c.has),
            parts=frozenset((c.calls & module_names) - {c.name}),
        )
        for c in modules
    )


def _params(params: cst.Parameters, skip_first: bool) -> tuple[Param, ...]:
    code = cst.Module([]).code_for_node
    out: list[Param] = []
    positional = [*params.posonly_params, *params.params]
    if skip_first and positional:
        positional = positional[1:]
    for p in positional:
        out.append(_param(p, "positional", code))
    if isinstance(params.star_arg, cst.Param):
        out.append(_param(params.star_arg, "var_positional", code))
    for p in params.kwonly_params:
        out.append(_param(p, "keyword", code))
    if params.star_kwarg is not None:
        out.append(_param(params.star_kwarg, "var_keyword", code))
    return tuple(out)


def _param(p: cst.Param, kind: str, code) -> Param:
    return Param(
        name=p.name.value,
        default=code(p.default) if p.default is not None else None,
        annotation=code(p.annotation.annotation) if p.annotation is not None else None,
        kind=kind,
    )


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return cst.Module([]).code_for_node(node)
