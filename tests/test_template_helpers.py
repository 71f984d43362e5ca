"""The generated backbone carries copies of the analysis's helpers (reaching a tensor in nested
outputs, the forms of forward arguments, the fixed noise): rendered, they behave as the analysis's
own on the same inputs. Compared by behaviour, not by text."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from scaffold.analyse.call import CallPlan, RandomDraws, as_form, forward_inputs, ramp_like
from scaffold.analyse.trace import _output_items, first_tensor
from scaffold.pipeline.new_backbone import Options, generate

from .conftest import MODELS


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The backbone module of a generated package whose forward takes a dict with per-band ids."""
    out = tmp_path_factory.mktemp("helpers") / "out"
    result = generate(
        Options(
            target=str(MODELS / "dict_in.py"),
            args={},
            input_shape=(4, 32, 32),
            name="helpers_dict_in",
            out=out,
            forward_args={"x_dict.chn_ids": [0, 3, 5, 7]},
            image_arg="x_dict.imgs",
        )
    )
    sys.path.insert(0, str(result.out))
    try:
        module = importlib.import_module(f"{result.backbone}.backbone")
        yield module
    finally:
        sys.path.remove(str(result.out))
        for name in [m for m in sys.modules if m.split(".")[0] == result.backbone]:
            del sys.modules[name]


NESTED = [
    torch.zeros(1),
    {"a": [torch.ones(2), {"b": torch.full((3,), 2.0)}], "c": torch.full((4,), 3.0)},
    (None, "text", [torch.full((5,), 4.0)]),
    [{"x": 1}, {"y": [torch.full((6,), 5.0), torch.full((7,), 6.0)]}],
]


@pytest.mark.parametrize("output", NESTED)
def test_a_key_path_reaches_the_same_tensor(rendered, output):
    kind, items = _output_items(output)
    assert items or kind == "tensor"
    for key, tensor in items:
        assert rendered._item(output, key) is tensor  # every path the analysis records
    assert rendered._item(output, None) is first_tensor(output)
    assert rendered._first_tensor(output) is first_tensor(output)


@pytest.mark.parametrize("form", ["value", "tensor", "batched"])
def test_forward_argument_forms_agree(rendered, form):
    x = torch.zeros(3, 4, 8, 8)
    value = [0, 3, 5, 7]
    ours, theirs = as_form(value, form, x), rendered._as_form(value, form, x)
    if form == "value":
        assert ours == theirs == value
    else:
        assert torch.equal(ours, theirs)
        assert theirs.shape == ((3, 4) if form == "batched" else (4,))


def test_the_forward_inputs_agree_with_the_analysed_call(rendered):
    x = torch.zeros(2, 4, 32, 32)
    call = CallPlan(
        image=rendered.IMAGE_ARG,
        image_positional=rendered.IMAGE_POSITIONAL,
        args=dict(rendered.FORWARD_ARGS),
    )
    ours = forward_inputs(call, dict(rendered.FORWARD_FORMS), x)
    theirs = rendered._forward_inputs(x, dict(rendered.FORWARD_ARGS))
    assert same(ours, theirs)
    (image_dict,), kwargs = theirs  # the dict is the forward's first parameter: positional
    assert kwargs == {} and image_dict["imgs"] is x
    assert image_dict["chn_ids"].tolist() == [[0, 3, 5, 7]] * 2  # batched per-band ids


def same(a, b) -> bool:
    """Equal structure, equal tensors."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_ramp_like_agrees(rendered, dtype):
    t = torch.zeros(2, 5, dtype=dtype)
    assert torch.equal(rendered._ramp_like(t), ramp_like(t))


def draws() -> list[torch.Tensor]:
    filled = torch.empty(2, 3)
    filled.uniform_()
    return [torch.rand(2, 5), torch.randn_like(torch.zeros(4)), torch.randperm(6), filled]


def test_fixed_noise_agrees(rendered):
    with RandomDraws(fixed=True):
        ours = draws()
    with rendered._FixedNoise():
        theirs = draws()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(theirs[2], torch.arange(6))  # a permutation that keeps the order
    assert bool((theirs[0].diff(dim=-1) > 0).all())  # increasing along the last dimension
