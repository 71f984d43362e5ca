"""Dynamic analysis: build the model and record every submodule call of one forward pass.

The model is built and run on the meta device first (shapes only, no weights allocated, so a
600M-parameter ViT costs no more than a small CNN); when an op cannot run there it is built and
run again on the CPU with small real tensors. Hooks record each call as a tree: which module,
which of its calls, the enclosing call, and the shape of the tensor it produced.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from scaffold.errors import ScaffoldError, one_line
from scaffold.runtime.inputs import first_tensor

# How the traced forward is called: (model, image) -> output.
ModelCall = Callable[[nn.Module, torch.Tensor], Any]
# How an item of a module's or the model's output is found: an index or dict key, a path of them
# into nested lists and dicts, None for a single tensor.
Key = int | str | tuple[int | str, ...] | None
BATCH = 2  # > 1, so that a batch folded with time (B*T, ...) is not taken for a feature map


@dataclass
class Call:
    """One call of one submodule during the traced forward pass."""

    name: str  # qualified module name, "" for the model itself
    type_name: str  # the module's class name
    call: int  # how many earlier calls the same module had
    parent: Call | None
    is_leaf: bool  # the module has no submodules
    children: list[Call] = field(default_factory=list)
    shape: tuple[int, ...] | None = None  # first tensor of the output
    output_id: int | None = None  # id() of that tensor, to match the model's return value
    returned_id: int | None = None  # the root only: id() of the tensor the forward returns
    # The data flow: the first tensor argument (positional, else keyword), every tensor argument
    # (a cell that reads the two previous cells' outputs has two; the items of a tuple, list or
    # dict argument) and every tensor of the output (a tuple's or list's items, a dict's values),
    # as (id(), shape), with each output item's key (its index or dict key; None for a single
    # tensor). Ids stay unique while the trace keeps the tensors alive; they show which module's
    # output another consumes.
    in_shape: tuple[int, ...] | None = None
    input_id: int | None = None
    inputs: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    outputs: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    output_keys: list[Key] = field(default_factory=list)
    weighted: bool = False  # a layer with a weight matrix or kernel (conv, linear) of its own


@dataclass
class OutputItem:
    key: Key  # None: the output is a single tensor
    shape: tuple[int, ...]
    module: Call | None  # the call that produced exactly this tensor, if any


@dataclass
class Trace:
    root: Call
    output_kind: str  # "tensor", "list", "tuple" or "dict"
    outputs: list[OutputItem]
    device: str  # "meta" or "cpu"
    # How the trace was made, to run the forward again at another size (`trace_forward`).
    model: nn.Module | None = None
    call: ModelCall | None = None
    # The data flow through functions (a difference, a concatenation, an interpolation) between
    # module calls: id() of each tensor a torch function made outside a leaf module -> the ids
    # of the tensors it read, and the shape of each such tensor.
    made_from: dict[int, tuple[int, ...]] = field(default_factory=dict)
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    made_in: dict[int, Call] = field(default_factory=dict)  # the call whose forward made it


def build_model(obj: Any, args: dict[str, Any], device: str) -> nn.Module:
    """Call the class or builder with `args`, with `device` as the default device."""
    with torch.device(device):
        model = obj(**args)
    if not isinstance(model, nn.Module):
        raise ScaffoldError(
            f"{getattr(obj, '__name__', obj)}(...) returned {type(model).__name__}, not an nn.Module"
        )
    return model


def check_arguments(obj: Any, args: dict[str, Any]) -> None:
    """Name the constructor arguments that are missing or unknown before calling anything."""
    name = getattr(obj, "__name__", str(obj))
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    params = sig.parameters.values()
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [p.name for p in named if p.default is p.empty and p.name not in args]
    if missing:
        given = ", ".join(f"--arg {n}=..." for n in missing)
        raise ScaffoldError(
            f"{name}() needs arguments that were not given: {', '.join(missing)} (pass {given})"
        )
    unknown = [k for k in args if k not in {p.name for p in named}]
    if unknown and not takes_kwargs:
        takes = ", ".join(p.name for p in named) or "nothing"
        raise ScaffoldError(f"{name}() has no parameter {', '.join(unknown)} (it takes: {takes})")


# Up to this many parameters a model is traced with real tensors on the CPU: allocating its
# weights costs less than the first meta-device forward (which loads torch's meta kernels).
SMALL_MODEL_PARAMS = 30_000_000


def construct(obj: Any, args: dict[str, Any]) -> tuple[nn.Module, str]:
    """Build a small model on the CPU, once: the build stops as soon as its parameters pass
    SMALL_MODEL_PARAMS, and a larger model is built on the meta device (shapes only) instead.
    A model whose constructor cannot run on meta is built on the CPU whatever its size."""
    check_arguments(obj, args)
    cpu_error: Exception | None = None
    try:
        return _build_small(obj, args), "cpu"
    except _TooLarge:
        pass
    except ScaffoldError:
        raise
    except Exception as exc:
        cpu_error = exc  # a large model may still build on meta
    meta: nn.Module | None = None
    try:
        meta = build_model(obj, args, "meta")
    except ScaffoldError:
        raise
    except Exception:  # the person's constructor cannot run on meta: the CPU build decides
        meta = None
    if meta is not None and (cpu_error is None or _num_params(meta) > SMALL_MODEL_PARAMS):
        return meta, "meta"
    try:
        if cpu_error is not None:
            raise cpu_error
        return build_model(obj, args, "cpu"), "cpu"
    except ScaffoldError:
        raise
    except Exception as exc:
        name = getattr(obj, "__name__", str(obj))
        raise ScaffoldError(
            f"{name}(...) raised while building the model: {one_line(exc)}"
        ) from exc


class _TooLarge(BaseException):
    """Stops a CPU build past SMALL_MODEL_PARAMS. A BaseException, so that a constructor's own
    ``except Exception`` does not swallow it."""


def _build_small(obj: Any, args: dict[str, Any]) -> nn.Module:
    """Build on the CPU, counting parameters as the constructor registers them; raise _TooLarge
    as soon as they pass SMALL_MODEL_PARAMS (before most of a large model is allocated)."""
    from torch.nn.modules.module import register_module_parameter_registration_hook

    seen: set[int] = set()
    total = 0

    def count(module: nn.Module, name: str, param: Any) -> None:
        nonlocal total
        if isinstance(param, torch.Tensor) and id(param) not in seen:
            seen.add(id(param))
            total += _numel(param)
            if total > SMALL_MODEL_PARAMS:
                raise _TooLarge

    handle = register_module_parameter_registration_hook(count)
    try:
        return build_model(obj, args, "cpu")
    finally:
        handle.remove()


def _numel(tensor: torch.Tensor) -> int:
    if isinstance(tensor, nn.parameter.UninitializedTensorMixin):  # type: ignore[attr-defined]  # not in torch's stubs
        return 0  # an uninitialised (lazy) parameter has no size yet
    return tensor.numel()


def _num_params(model: nn.Module) -> int:
    return sum(_numel(p) for p in model.parameters())


def trace_forward(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: str,
    call: ModelCall | None = None,
    partial: bool = False,
) -> Trace:
    """Run one forward pass on a random (B, *input_shape) input and record the call tree.

    `call(model, x)` calls the model (the other forward arguments: scaffold.analyse.call);
    None: ``model(x)``. `partial`: when the forward raises, the calls recorded up to there
    (an encoder that runs at any size before a head that does not), with no output."""
    root = Call(name="", type_name=type(model).__name__, call=0, parent=None, is_leaf=False)
    stack: list[Call] = [root]
    counts: dict[str, int] = {}
    handles = []
    keep_alive: list[torch.Tensor] = []  # ids stay unique while the tensors live

    def pre_hook(name: str, is_leaf: bool):
        def hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            parent = stack[-1]
            node = Call(name, type(module).__name__, counts.get(name, 0), parent, is_leaf)
            counts[name] = node.call + 1
            node.weighted = any(p.ndim >= 2 for p in module.parameters(recurse=False))
            tensor = first_tensor(args)
            if tensor is None:
                tensor = first_tensor(kwargs)
            if tensor is not None:
                node.in_shape = tuple(tensor.shape)
                node.input_id = id(tensor)
                keep_alive.append(tensor)
            for item in [*_tensors(list(args)), *_tensors(kwargs)]:
                node.inputs.append((id(item), tuple(item.shape)))
                keep_alive.append(item)
            parent.children.append(node)
            stack.append(node)

        return hook

    def post_hook(module: nn.Module, args: Any, output: Any) -> None:
        node = stack.pop()
        tensor = first_tensor(output)
        if tensor is not None:
            node.shape = tuple(tensor.shape)
            node.output_id = id(tensor)
            keep_alive.append(tensor)
        for key, item in _output_items(output)[1]:
            node.outputs.append((id(item), tuple(item.shape)))
            node.output_keys.append(key)
            keep_alive.append(item)

    made_from: dict[int, tuple[int, ...]] = {}
    shapes: dict[int, tuple[int, ...]] = {}
    functions = _FunctionFlow(stack, made_from, shapes)
    made_in = functions.made_in
    for name, module in model.named_modules():
        if name:
            is_leaf = next(module.children(), None) is None
            handles.append(
                module.register_forward_pre_hook(pre_hook(name, is_leaf), with_kwargs=True)
            )
            handles.append(module.register_forward_hook(post_hook))
    try:
        x = torch.randn(BATCH, *input_shape, device=device)
        root.in_shape, root.input_id = tuple(x.shape), id(x)
        root.inputs = [(id(x), tuple(x.shape))]
        model.eval()
        with torch.no_grad(), functions:
            output = call(model, x) if call is not None else model(x)
    except Exception:
        if not partial:
            raise
        output = None
    finally:
        for h in handles:
            h.remove()
    kind, items = _output_items(output)
    by_id: dict[int, Call] = {}
    _index_calls(root, by_id)
    outputs = [OutputItem(key, tuple(t.shape), by_id.get(id(t))) for key, t in items]
    first = first_tensor(output)
    root.shape = tuple(first.shape) if first is not None else None
    root.returned_id = id(first) if first is not None else None
    return Trace(root, kind, outputs, device, model, call, made_from, shapes, made_in)


class _FunctionFlow(TorchFunctionMode):
    """Records, for each tensor a torch function makes while no leaf module runs (the forward
    of the model or of a container), the tensors it read: how a difference of two calls'
    outputs, or a resize of a layer's output, comes about. Tensors are known by id(), and none
    is kept alive for it: the record of a tensor that dies while the forward runs (its id free
    for another) moves to a key of its own."""

    def __init__(
        self,
        stack: list[Call],
        made_from: dict[int, tuple[int, ...]],
        shapes: dict[int, tuple[int, ...]],
    ) -> None:
        super().__init__()
        self.stack, self.made_from, self.shapes = stack, made_from, shapes
        self.readers: dict[int, set[int]] = {}
        self.made_in: dict[int, Call] = {}
        self.refs: dict[int, weakref.ref] = {}
        self.fresh = itertools.count(-1, -1)  # keys of tensors that died
        self.done = False

    def __exit__(self, *exc: Any) -> None:
        self.done = True  # what dies after the forward no longer changes the record
        super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.stack[-1].is_leaf:
            return out
        read = _tensors([*args, *(kwargs or {}).values()])
        made = [out] if isinstance(out, torch.Tensor) else []
        if isinstance(out, (list, tuple)):
            made = _tensors(out)
        if not read or not made:
            return out
        ids = tuple(dict.fromkeys(id(t) for t in read))
        for tensor in read:
            self._watch(tensor)
        for tensor in made:
            if id(tensor) in ids:
                continue  # in place: the tensor keeps its id, and what it was made of
            self._watch(tensor)
            self.made_from[id(tensor)] = ids
            self.shapes[id(tensor)] = tuple(tensor.shape)
            self.made_in[id(tensor)] = self.stack[-1]
            for tid in ids:
                self.readers.setdefault(tid, set()).add(id(tensor))
        return out

    def _watch(self, tensor: torch.Tensor) -> None:
        ref = self.refs.get(id(tensor))
        if ref is None or ref() is not tensor:
            self.refs[id(tensor)] = weakref.ref(tensor, functools.partial(self._died, id(tensor)))

    def _died(self, tid: int, _ref: Any = None) -> None:
        """Tensor `tid` died while the forward runs: its id may be reused, so its record moves
        to a key no id() takes (a negative number)."""
        if self.done:
            return
        self.refs.pop(tid, None)
        key = next(self.fresh)
        if tid in self.shapes:
            self.shapes[key] = self.shapes.pop(tid)
        if tid in self.made_in:
            self.made_in[key] = self.made_in.pop(tid)
        parents = self.made_from.pop(tid, None)
        if parents is not None:
            self.made_from[key] = parents
            for parent in parents:
                readers = self.readers.setdefault(parent, set())
                readers.discard(tid)
                readers.add(key)
        readers = self.readers.pop(tid, set())
        if readers:
            self.readers[key] = readers
        for made in readers:
            if made in self.made_from:
                self.made_from[made] = tuple(key if t == tid else t for t in self.made_from[made])


def run_trace(
    obj: Any,
    args: dict[str, Any],
    model: nn.Module,
    device: str,
    input_shape: tuple[int, ...],
    call: ModelCall | None = None,
) -> Trace:
    """Trace on `device`; when that is meta and an op cannot run there, rebuild on the CPU."""
    try:
        return trace_forward(model, input_shape, device, call)
    except Exception as exc:
        if device != "meta":
            raise ForwardFailed(exc) from exc
    try:
        cpu_model = build_model(obj, args, "cpu")
    except ScaffoldError:
        raise
    except Exception as exc:
        name = getattr(obj, "__name__", type(obj).__name__)
        raise ScaffoldError(
            f"{name}(...) raised while building the model: {one_line(exc)}"
        ) from exc
    try:
        return trace_forward(cpu_model, input_shape, "cpu", call)
    except Exception as exc:
        raise ForwardFailed(exc) from exc


class ForwardFailed(Exception):
    """The model's forward raised on the traced input (carries the model's own exception)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(one_line(cause))
        self.cause = cause


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of a module's arguments: each argument that is a tensor, and the tensor
    items of an argument that is a tuple, list or dict."""
    if isinstance(value, dict):
        value = list(value.values())
    found: list[torch.Tensor] = []
    for item in value:
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple, dict)):
            inner = item.values() if isinstance(item, dict) else item
            found += [v for v in inner if isinstance(v, torch.Tensor)]
    return found


def _output_items(output: Any) -> tuple[str, list[tuple[Key, torch.Tensor]]]:
    """The kind of `output` and its tensors with their keys: an index or dict key, or for a
    tensor inside a list or dict item (a list of dicts, a dict of lists) the path of keys."""
    if isinstance(output, torch.Tensor):
        return "tensor", [(None, output)]
    if isinstance(output, dict):
        kind, pairs = "dict", list(output.items())
    elif isinstance(output, (list, tuple)):
        kind, pairs = ("list" if isinstance(output, list) else "tuple"), list(enumerate(output))
    else:
        return type(output).__name__, []
    found: list[tuple[Key, torch.Tensor]] = []
    for key, value in pairs:
        if isinstance(value, torch.Tensor):
            found.append((key, value))
        elif isinstance(value, (list, tuple, dict)):
            for inner, tensor in _output_items(value)[1]:
                path = inner if isinstance(inner, tuple) else (inner,)
                found.append(((key, *path), tensor))
    return kind, found


def _index_calls(call: Call, by_id: dict[int, Call]) -> None:
    for child in call.children:
        _index_calls(child, by_id)
        # Outermost call wins: a parent that returns its child's tensor as is names it.
        if child.output_id is not None:
            by_id[child.output_id] = child
