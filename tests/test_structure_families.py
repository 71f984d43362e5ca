"""Model structures held to the truth: each feature equals what the model itself computes,
read with forward hooks on a plain copy with the same weights, at two input sizes (one
non-square), through the generated backbone built by timm; and `verify --quick` passes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from scaffold.pipeline import analyse
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.write.state import read_state

from .conftest import MODELS, run_cli
from .test_foundation import fresh_backbone, same_weights

SIZES = ((64, 64), (64, 96))


def outputs(model: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> list:
    """What each of `modules` returns, call by call, while `model(x)` runs."""
    seen: list = []
    handles = [m.register_forward_hook(lambda _m, _a, out: seen.append(out)) for m in modules]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def built(tmp_path, name: str):
    """The backbone generated for tests/models/NAME.py (not verified), built through timm, and a
    plain copy of the model with its weights."""
    result = generate(Options(str(MODELS / f"{name}.py"), {}, out=tmp_path / name))
    backbone = fresh_backbone(result.backbone, result.out)
    plain = type(backbone.model)()
    same_weights(plain, backbone)
    return result, backbone, plain.eval()


def assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def verified_quick(out) -> dict[str, tuple[bool, str]]:
    done = run_cli("verify", str(out), "--quick", "--json")
    data = json.loads(done.stdout)
    assert data["ok"], data["checks"]
    return {c["name"]: (c["ok"], c["detail"]) for c in data["checks"]}


def test_a_stage_returning_its_output_and_the_next_input_is_tapped_on_its_output(tmp_path):
    spec = analyse(str(MODELS / "swin_stage_tuples.py"))
    # Each stage's own output (item 0, normed, at its resolution), not its blocks' output nor
    # what enters the next stage; the merged tokens only carry the walk on.
    assert [
        (f.module, f.source, f.key, f.num_chs, f.reduction, f.layout) for f in spec.features
    ] == [(f"stages.{i}", "hook", None, 16 * 2**i, 4 * 2**i, "NLC") for i in range(4)]
    assert spec.head_modules == ("head",)
    result, backbone, plain = built(tmp_path, "swin_stage_tuples")
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w)
        want = [out[0] for out in outputs(plain, list(plain.stages), x)]
        with torch.no_grad():
            assert_same(backbone(x), want)
    assert "head" in " ".join(backbone.removed_modules)
    verified_quick(result.out)


def test_a_siamese_encoders_outputs_are_tapped_where_they_are_combined(tmp_path):
    spec = analyse(str(MODELS / "siamese_change.py"))
    # What enters each lateral conv: |f1 - f2| of the shared encoder's two calls, never one
    # image's map.
    assert [(f.module, f.source, f.num_chs, f.reduction) for f in spec.features] == [
        (f"lateral.{i}", "input", c, 2 ** (i + 1)) for i, c in enumerate((8, 16, 24, 32))
    ]
    result, backbone, plain = built(tmp_path, "siamese_change")
    for h, w in SIZES:
        x = torch.rand(2, 6, h, w)
        maps = outputs(plain, list(plain.encoder.stages), x)
        first, second = maps[:4], maps[4:]
        want = [torch.abs(a - b) for a, b in zip(first, second, strict=True)]
        with torch.no_grad():
            assert_same(backbone(x), want)
    verified_quick(result.out)


def test_a_sum_of_two_modules_written_in_the_forward_is_tapped_whole(tmp_path):
    target = f"{MODELS / 'summed_stages.py'}:SummedStages"
    spec = analyse(target)
    # what enters the next level's conv: the sum, never refine.i's output (one operand)
    assert [(f.module, f.source, f.num_chs, f.reduction) for f in spec.features] == [
        ("down.1", "input", 8, 2),
        ("down.2", "input", 16, 4),
        ("down.3", "input", 24, 8),
        ("norm", "hook", 32, 16),
    ]
    result = generate(Options(target, {}, out=tmp_path / "summed"))
    backbone = fresh_backbone(result.backbone, result.out)
    plain = type(backbone.model)()
    same_weights(plain, backbone)
    plain.eval()
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w)
        down = outputs(plain, list(plain.down), x)
        refine = outputs(plain, list(plain.refine), x)
        want = [d + torch.relu(r) for d, r in zip(down, refine, strict=True)][:3]
        want += outputs(plain, [plain.norm], x)
        with torch.no_grad():
            assert_same(backbone(x), want)
    verified_quick(result.out)
    # The last sum goes into a global pool: no module reads it, so scaffold refuses, naming it.
    done = run_cli("inspect", f"{MODELS / 'summed_stages.py'}:PooledSum")
    assert done.returncode == 2
    assert "the output of refine.3 and another module's output are combined in Python" in (
        done.stderr
    )
    assert "32x4x4 map that no module reads" in done.stderr and "Traceback" not in done.stderr


def test_a_layer_to_the_classes_then_a_resize_is_head(tmp_path):
    spec = analyse(str(MODELS / "seg_to_classes.py"))
    assert [(f.module, f.num_chs, f.reduction) for f in spec.features] == [
        (f"stages.{i}", c, 2 ** (i + 1)) for i, c in enumerate((8, 16, 24, 32))
    ]
    assert spec.head_modules == ("classifier",)
    result, backbone, plain = built(tmp_path, "seg_to_classes")
    assert backbone.removed_modules == ("model.classifier",)
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            assert_same(backbone(x), outputs(plain, list(plain.stages), x))
    verified_quick(result.out)


UNUSED = ("pos_embed", "radar_embed.weight", "radar_embed.bias", "fc_norm.weight", "fc_norm.bias")


def test_parameters_the_input_never_reaches_are_frozen_and_listed(tmp_path):
    spec = analyse(str(MODELS / "unused_parts.py"))
    assert spec.frozen == UNUSED
    assert not spec.doubts
    result, backbone, plain = built(tmp_path, "unused_parts")
    frozen = {n for n, p in backbone.model.named_parameters() if not p.requires_grad}
    assert frozen == set(UNUSED)
    # the weights still load, frozen ones included
    state = {k: torch.full_like(v, 0.5) for k, v in plain.state_dict().items()}
    backbone.model.load_state_dict(state)
    assert bool((backbone.model.radar_embed.weight == 0.5).all())
    assert (
        "FROZEN: tuple[str, ...] = (" in (result.out / result.backbone / "backbone.py").read_text()
    )
    same_weights(plain, backbone)
    for h, w in SIZES:
        x = torch.rand(2, 4, h, w)
        with torch.no_grad():
            assert_same(backbone(x), plain(x))
    found = verified_quick(result.out)
    ok, detail = found["trainable"]
    assert ok and "5 frozen by the backbone" in detail and "radar_embed.weight" in detail
    shown = run_cli("inspect", str(MODELS / "unused_parts.py"))
    assert "frozen (no gradient from the input): pos_embed, radar_embed.weight" in " ".join(
        shown.stdout.split()
    )


def test_mostly_frozen_parameters_are_a_doubt():
    # A second modality's embedding larger than the rest of the model: most of its parameters
    # never get a gradient, so the taps are doubted (not "verified"), with the flag that settles it.
    spec = analyse(str(MODELS / "unused_parts.py"), {"radar_chans": 200})
    assert spec.frozen == UNUSED
    assert [(d.kind, d.flag) for d in spec.doubts] == [
        ("mostly-frozen", "--taps blocks.0,blocks.1,blocks.2,blocks.3")
    ]
    assert "radar_embed" in spec.doubts[0].message


def tiny(config: dict) -> list[str]:
    return [a for k, v in config.items() for a in ("--arg", f"{k}={v}")]


SCALEMAE = {"embed_dim": 32, "depth": 4, "num_heads": 2, "patch_size": 8, "img_size": 64}
COPERNICUS = {"embed_dim": 32, "depth": 4, "num_heads": 2, "hyper_dim": 16, "img_size": 64}
COPERNICUS_CALL = [
    *("--forward-arg", "wavelengths=[490,560,665]"),
    *("--forward-arg", "bandwidths=[65,35,30]"),
    *("--forward-arg", "metadata=[.nan,.nan,.nan,.nan]"),
]


@pytest.mark.parametrize(
    ("target", "options", "frozen"),
    [
        # its own sin-cos position embedding replaces timm's; the final norm is never called
        (
            "terratorch.models.backbones.scalemae:VisionTransformer",
            tiny(SCALEMAE),
            ["pos_embed", "norm.weight", "norm.bias"],
        ),
        # the 'variable' patch embedding (language-embedded inputs) is not used for bands
        ("torchgeo.models.copernicusfm:CopernicusFM", tiny(COPERNICUS) + COPERNICUS_CALL, None),
    ],
    ids=["scalemae", "copernicusfm"],
)
def test_foundation_models_with_unused_modules_verify(tmp_path, target, options, frozen):
    out = tmp_path / "out"
    done = run_cli(
        "new-backbone",
        target,
        *options,
        "--input-shape",
        "3,64,64",
        "--out",
        str(out),
        "--no-verify",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verified"] is False  # --no-verify
    spec = read_state(out).spec
    if frozen is not None:
        assert list(spec.frozen) == frozen
    else:
        assert spec.frozen and all(p.startswith("patch_embed_variable.") for p in spec.frozen)
    assert not spec.doubts
    ok, detail = verified_quick(out)["trainable"]
    assert ok and f"{len(spec.frozen)} frozen by the backbone" in detail
