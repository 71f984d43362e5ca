"""Token layouts measured on the model, never assumed from a count: extra tokens after the patch
tokens, the tokens of several patch embeddings (groups of bands), and a grid that two reductions
explain. Each feature is held to the truth: the blocks' tokens read with forward hooks on a plain
copy of the model with the same weights, the grid tokens cut out and reshaped here (row-major
h x w per group, the groups' channels side by side), at two input sizes, one non-square."""

from __future__ import annotations

import re

import pytest
import torch

from scaffold.pipeline import analyse
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.write.state import read_state

from .conftest import MODELS, run_cli, run_json
from .test_foundation import block_stream, fresh_backbone, same_weights

ORDER = str(MODELS / "token_order.py")
GROUPS = str(MODELS / "group_vit.py")
PATCH14 = str(MODELS / "patch14.py")


def truth(tokens: torch.Tensor, prefix: int, suffix: int, groups: int, h: int, w: int):
    """(B, prefix + groups*h*w + suffix, C) -> (B, groups*C, h, w): each group's tokens rows
    first, group 0's channels first."""
    grid = tokens[:, prefix : tokens.shape[1] - suffix]
    assert grid.shape[1] == groups * h * w
    maps = grid.reshape(grid.shape[0], groups, h, w, grid.shape[-1]).permute(0, 1, 4, 2, 3)
    return maps.reshape(grid.shape[0], -1, h, w)


def layout(spec):
    return [
        (f.module, f.num_chs, f.reduction, f.layout, f.grid, f.prefix_tokens, f.suffix_tokens)
        + (f.groups,)
        for f in spec.features
    ]


# target, expected per block (channels, reduction, grid, prefix, suffix, groups), blocks,
# the two input sizes (the analysed one first), and the patch
FAMILIES = {
    "suffix class token": (f"{ORDER}:suffix_class_vit", (32, 16, (4, 4), 0, 1, 1), 4),
    "registers after the patches": (f"{ORDER}:register_vit", (32, 16, (4, 4), 1, 4, 1), 4),
    "groups and a class token": (f"{GROUPS}:GroupViT", (128, 16, (4, 4), 1, 0, 4), 4),
    "groups without a class token": (f"{GROUPS}:group_vit_no_class", (128, 16, (4, 4), 0, 0, 4), 4),
    "patch 14 at 56 pixels": (f"{PATCH14}:Patch14ViT", (32, 14, (4, 4), 1, 0, 1), 4),
}
SIZES = {"patch 14 at 56 pixels": ((56, 56), (56, 84), 14)}


def in_chans(spec) -> int:
    return spec.input_shape[1]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_token_features_are_the_models_own_tokens(family, tmp_path):
    target, (chs, r, grid, prefix, suffix, groups), depth = FAMILIES[family]
    spec = analyse(target)
    assert layout(spec) == [
        (f"blocks.{i}", chs, r, "NLC", grid, prefix, suffix, groups) for i in range(depth)
    ]
    assert spec.doubts == ()
    if groups > 1:
        assert f"{groups} groups of 4x4 (one patch embedding each)" in spec.features[0].why
        assert f"{groups} x {chs // groups} = {chs}" in spec.features[0].why

    result = generate(Options(target, {}, out=tmp_path / "out"))
    source = (result.package / "backbone.py").read_text()
    if suffix:
        assert re.search(f'"suffix_tokens": {suffix}[,}}]', source)
    if groups > 1:
        assert re.search(f'"groups": {groups}[,}}]', source)
    backbone = fresh_backbone(result.backbone, result.out, image_features=True)
    assert backbone.feature_info.channels() == [chs] * depth
    assert backbone.feature_info.reduction() == [r] * depth
    plain = _plain(target)
    same_weights(plain, backbone)
    plain.eval()
    first, second, patch = SIZES.get(family, ((64, 64), (64, 96), 16))
    for height, width in (first, second):
        torch.manual_seed(height + width)
        x = torch.rand(2, in_chans(spec), height, width)
        stream = block_stream(plain, list(plain.blocks), x, lambda m, v: m(v))
        with torch.no_grad():
            got = backbone(x)
        assert len(got) == len(stream) == depth
        h, w = height // patch, width // patch
        for a, tokens in zip(got, stream, strict=True):
            torch.testing.assert_close(a, truth(tokens, prefix, suffix, groups, h, w))
    if groups > 1:  # the groups' mean, when asked for
        mean = fresh_backbone(
            result.backbone, result.out, image_features=True, group_reduction="mean"
        )
        same_weights(mean, plain)
        assert mean.feature_info.channels() == [chs // groups] * depth
        with torch.no_grad():
            got = mean(x)
        want = truth(stream[-1], prefix, suffix, groups, h, w)
        want = want.reshape(2, groups, chs // groups, h, w).mean(dim=1)
        torch.testing.assert_close(got[-1], want)

    done = run_cli("verify", str(result.out), "--quick")
    assert done.returncode == 0, done.stdout + done.stderr


def _plain(target: str):
    """The person's model built from its file, apart from the generated backbone."""
    from scaffold.resolve.target import resolve_target

    return resolve_target(target).obj()


def test_a_grid_two_reductions_explain_at_one_size_is_a_doubt_not_a_head(tmp_path):
    # The forward refuses every other size: 4x4 at 56 pixels stays 14 or 16. Read at 14 (what
    # the tokens after the class token give exactly), the blocks are the features, not a head.
    spec = analyse(f"{PATCH14}:strict_patch14_vit")
    assert layout(spec) == [(f"blocks.{i}", 32, 14, "NLC", (4, 4), 1, 0, 1) for i in range(4)]
    assert [d.kind for d in spec.doubts] == ["two-grids"]
    doubt = spec.doubts[0]
    assert doubt.flag == "--input-shape C,H,W"
    assert "the 4x4 grid of the 56x56 input is reduction 14 or 16" in doubt.message
    # The second size decides where the forward runs there: no doubt, reduction 14.
    resolved = analyse(f"{PATCH14}:Patch14ViT")
    assert resolved.doubts == ()
    assert any(
        "read at 14, which also fits the same tensors at 112x112" in n for n in resolved.notes
    )


def test_extra_tokens_are_measured_on_a_model_traced_on_meta(monkeypatch):
    # A large model is traced on the meta device: its copy gets CPU weights module by module
    # as the probe forward reaches them, and stops at the blocks.
    monkeypatch.setattr("scaffold.analyse.trace.SMALL_MODEL_PARAMS", 0)
    spec = analyse(f"{ORDER}:suffix_class_vit")
    assert spec.traced_on == "meta"
    assert layout(spec) == [(f"blocks.{i}", 32, 16, "NLC", (4, 4), 0, 1, 1) for i in range(4)]
    assert spec.doubts == ()


def test_extra_tokens_that_cannot_be_measured_are_assumed_and_say_so():
    # A block mixes the patch tokens before the class token joins them: one pixel reaches every
    # grid token of the 17-token tensors, so where the class token sits is assumed, a doubt.
    spec = analyse(f"{ORDER}:premixed_vit")
    assert layout(spec) == [(f"blocks.{i}", 32, 16, "NLC", (4, 4), 1, 0, 1) for i in range(4)]
    assert [d.kind for d in spec.doubts] == ["token-positions"]
    assert "17 tokens of blocks.0 were read as 1 extra token(s) before" in spec.doubts[0].message
    assert "could not be measured" in spec.doubts[0].message


def test_token_positions_and_groups_round_trip_and_old_specs_read():
    from scaffold.spec import BackboneSpec

    spec = analyse(f"{GROUPS}:GroupViT")
    again = BackboneSpec.from_json(spec.to_json())
    assert again == spec and again.features[0].groups == 4
    data = spec.to_dict()
    for f in data["features"]:  # a spec written before these fields: one grid, no suffix
        del f["suffix_tokens"], f["groups"]
    old = BackboneSpec.from_dict(data)
    assert {(f.suffix_tokens, f.groups) for f in old.features} == {(0, 1)}


@pytest.mark.e2e
def test_group_vit_new_backbone_verifies_end_to_end(tmp_path):
    out = tmp_path / "groups"
    code, data = run_json("new-backbone", f"{GROUPS}:GroupViT", "--out", str(out))
    assert code == 0 and data["verified"] is True, data
    assert layout(read_state(out).spec) == [
        (f"blocks.{i}", 128, 16, "NLC", (4, 4), 1, 0, 4) for i in range(4)
    ]
