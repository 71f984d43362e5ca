"""Doubts: what the analysis is unsure of is recorded with the flag that settles it, and such a
backbone is "generated, not verified". `--taps` names the features, and settles the tap doubts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from scaffold.pipeline import analyse
from tests.conftest import MODELS, SWIN3D, run_cli, run_json

DEEP = f"{MODELS / 'one_map_deep_head.py'}"
WIDE = f"{MODELS / 'wide_head.py'}:WideHead"
BIG_CLASSIFIER = f"{MODELS / 'wide_head.py'}:BigClassifier"
MODALITIES = f"{MODELS / 'modality_dict.py'}:ModalityDictEncoder"
DECLARED = f"{MODELS / 'declared_features.py'}:DeclaredInside"
AGREES = f"{MODELS / 'declared_features.py'}:DeclaredAgrees"
CNN = str(MODELS / "cnn.py")


def kinds(spec) -> list[str]:
    return [d.kind for d in spec.doubts]


def taps(spec) -> list[tuple[str, str, int, int]]:
    return [(f.module, f.source, f.num_chs, f.reduction) for f in spec.features]


# -- the rules ------------------------------------------------------------------------------------
def test_one_map_in_a_deep_model_is_a_single_tap_doubt():
    spec = analyse(DEEP)
    assert taps(spec) == [("stem", "hook", 8, 4)]
    (doubt,) = spec.doubts
    assert doubt.kind == "single-tap"
    assert doubt.message == (
        "one feature map only (stem, 8 at 4) in a model that runs 10 layers with weights: no "
        "other level was found to tap"
    )
    assert doubt.flag == "--taps MODULE[,MODULE...]"
    # Shallow: the same one map with a two-layer MLP is no doubt.
    assert analyse(DEEP, {"depth": 2}).doubts == ()


def test_a_head_on_maps_larger_than_the_encoder_is_a_doubt_a_classifier_is_not():
    spec = analyse(WIDE)
    assert [f.module for f in spec.features] == ["encoder.stem", "encoder.stage1", "encoder.stage2"]
    (doubt,) = spec.doubts
    assert doubt.kind == "head-larger"
    assert "hold 25,600 parameters in layers that still work on maps (conv_head)" in doubt.message
    assert "more than the encoder's 12,576" in doubt.message
    # A classifier reads a pooled vector: however large (275k parameters here), no doubt.
    big = analyse(BIG_CLASSIFIER)
    assert big.head_modules == ("pool", "classifier") and big.doubts == ()


def test_a_declared_modality_never_fed_is_a_doubt_until_the_model_is_built_for_the_fed_one():
    spec = analyse(MODALITIES, image_arg="x.S2L2A")
    (doubt,) = spec.doubts
    assert doubt.kind == "input-not-fed"
    assert doubt.message == (
        "the model declares modalities=['S2L2A', 'S1GRD'] but only x['S2L2A'] is fed (S1GRD "
        "never is; embed.S1GRD never runs); or name each one's bands to feed them all, "
        "--bands 'S2L2A=...;S1GRD=...'"
    )
    assert doubt.flag == "--arg modalities=['S2L2A']"
    assert analyse(MODALITIES, {"modalities": ["S2L2A"]}, image_arg="x.S2L2A").doubts == ()
    # One image only: the declared modality whose modules never run is the one not fed.
    first = analyse(f"{MODELS / 'modality_dict.py'}:FirstModalityOnly")
    assert [(d.kind, d.flag) for d in first.doubts] == [
        ("input-not-fed", "--arg modalities=['S2L2A']")
    ]
    assert "(S1GRD never is; embed.S1GRD never runs)" in first.doubts[0].message


def test_a_second_image_parameter_never_fed_is_a_doubt():
    spec = analyse(str(MODELS / "two_modal.py"), {}, (12, 32, 32), {}, "x_optical")
    assert [str(d) for d in spec.doubts] == [
        (
            "the forward's input x_sar is never fed (the image goes to x_optical; sar never runs) "
            "(--bands 'x_optical=...;x_sar=...')"
        )
    ]
    assert kinds(spec) == ["input-not-fed"]


def test_a_forward_intermediates_that_differs_is_a_doubt():
    spec = analyse(f"{MODELS / 'declared_features.py'}:IntermediatesInside")
    assert [(d.kind, d.message) for d in spec.doubts] == [
        (
            "declared-features",
            (
                "the model's forward_intermediates gives 8 at 2, 16 at 4, 32 at 8; scaffold taps "
                "stem (8 at 2), stage1 (24 at 4), stage2 (32 at 8)"
            ),
        )
    ]


def test_weights_read_without_calling_their_layer_leave_no_input_unfed():
    """An attention that reads its qkv layer's weight with F.linear never calls that layer; with
    an optional attn_mask beside the image, that is no input never fed (timm's EVA)."""
    spec = analyse(str(MODELS / "fused_qkv.py"))
    assert [f.module for f in spec.features] == ["blocks.0", "blocks.1"]
    assert spec.doubts == ()


def test_features_the_model_declares_otherwise_are_a_doubt_with_the_taps_that_take_them():
    spec = analyse(DECLARED)
    assert [(f.module, f.num_chs) for f in spec.features] == [
        ("stem", 8),
        ("stage1", 24),
        ("stage2", 32),
    ]
    declared, indices = spec.doubts
    assert declared.kind == indices.kind == "declared-features"
    assert declared.message == (
        "the model's feature_info declares stem (8 at 2), stage1.0 (16 at 4), stage2 (32 at 8); "
        "scaffold taps stem (8 at 2), stage1 (24 at 4), stage2 (32 at 8)"
    )
    assert declared.flag == "--taps stem,stage1.0,stage2"
    assert indices.message.startswith("the model declares 4 levels (out_indices=[0, 1, 2, 3])")
    assert analyse(AGREES).doubts == ()
    # The taps the doubt offers: the model's own features, measured; the person settled it.
    settled = analyse(DECLARED, taps=("stem", "stage1.0", "stage2"))
    assert taps(settled) == [
        ("stem", "hook", 8, 2),
        ("stage1.0", "hook", 16, 4),
        ("stage2", "hook", 32, 8),
    ]
    assert settled.doubts == ()


def test_no_doubt_on_the_suites_backbones(generated):
    """The models every other test generates (the swin3d example among them) are not doubted."""
    for name, result in generated.items():
        state = json.loads((result.out / ".scaffold" / "state.json").read_text())
        assert state["spec"]["doubts"] == [], name
    assert analyse(str(SWIN3D)).doubts == ()


# -- generated, not verified ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "flags", "kind"),
    [
        (DEEP, [], "single-tap"),
        (WIDE, [], "head-larger"),
        (MODALITIES, ["--image-arg", "x.S2L2A"], "input-not-fed"),
        (DECLARED, [], "declared-features"),
    ],
    ids=["single-tap", "head-larger", "input-not-fed", "declared-features"],
)
def test_a_doubted_backbone_is_generated_and_never_verified(tmp_path, target, flags, kind):
    out = tmp_path / "out"
    code, data = run_json("new-backbone", target, *flags, "--out", str(out), "--no-verify")
    assert code == 0, data
    state = json.loads((out / ".scaffold" / "state.json").read_text())
    assert kind in [d["kind"] for d in state["spec"]["doubts"]]
    code, report = run_json("verify", str(out), "--quick")
    assert code == 1 and report["ok"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["doubts"]["ok"] is False
    assert state["spec"]["doubts"][0]["message"] in checks["doubts"]["detail"]
    # The doubt stops it where the backbone passes every other check; the modality never fed
    # also leaves its embedding without a gradient, which the trainable check finds.
    failed = {name for name, c in checks.items() if not c["ok"]}
    if kind == "input-not-fed":  # its unused embedding is frozen, so trainable passes
        assert failed == {"doubts"}, checks
        assert "embed.S1GRD" in checks["trainable"]["detail"]
    else:
        assert failed == {"doubts"}, checks


@pytest.mark.e2e
def test_new_backbone_says_generated_not_verified_and_exits_1(tmp_path):
    """The contract as a person meets it: the whole ladder, benchmark included, then exit 1."""
    out = tmp_path / "deep"
    done = run_cli("new-backbone", DEEP, "--out", str(out))
    assert done.returncode == 1, done.stderr
    assert (
        "generated, not verified: one feature map only (stem, 8 at 4) in a model that runs 10 "
        "layers with weights: no other level was found to tap (--taps MODULE[,MODULE...])"
    ) in " ".join(done.stderr.split())
    assert "benchmark" in done.stdout and "FAILED" in done.stdout  # the doubts row
    state = json.loads((out / ".scaffold" / "state.json").read_text())
    assert [d["kind"] for d in state["spec"]["doubts"]] == ["single-tap"]


# -- --taps ---------------------------------------------------------------------------------------
def _hooked_shapes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """What enters and leaves each module of a plain model, by hooks: the reference."""
    shapes: dict[str, tuple[int, ...]] = {}

    def pre(name: str):
        def hook(module, args) -> None:
            shapes.setdefault(f"input of {name}", tuple(args[0].shape))

        return hook

    def post(name: str):
        def hook(module, args, output) -> None:
            shapes.setdefault(name, tuple(output.shape))

        return hook

    for name, module in model.named_modules():
        module.register_forward_pre_hook(pre(name))
        module.register_forward_hook(post(name))
    model.eval()
    with torch.no_grad():
        model(x)
    return shapes


def test_taps_picks_those_tensors_measured_as_hooks_on_a_plain_model_see_them():
    named = ["stem", "stage1.0", "input of stage2.1"]
    code, spec = run_json("inspect", CNN, "--taps", ",".join(named))
    assert code == 0, spec
    sys.path.insert(0, str(MODELS))
    try:
        from cnn import SmallCNN
    finally:
        sys.path.remove(str(MODELS))
    shape = spec["input_shape"]
    reference = _hooked_shapes(SmallCNN(), torch.randn(shape))
    expected = [
        (n, reference[n][1], shape[-1] // reference[n][-1], "NCHW", list(reference[n][1:]))
        for n in named
    ]
    got = [
        (
            ("input of " if f["source"] == "input" else "") + f["module"],
            f["num_chs"],
            f["reduction"],
            f["layout"],
            f["shape"][1:],
        )
        for f in spec["features"]
    ]
    assert got == expected
    assert expected[1][1:3] == (16, 4) and expected[2][1:3] == (32, 8)  # not the analysis's own
    assert spec["out_indices"] == [0, 1, 2]
    assert spec["doubts"] == []
    assert "the taps are those --taps names: stem, stage1.0, input of stage2.1" in spec["notes"]
    # The stage after the last tap never runs in the backbone: input of stage2.1 leaves it out.
    assert spec["head_modules"][:1] == ["stage2.1"]


def test_taps_settle_a_single_tap_doubt():
    code, spec = run_json("inspect", DEEP, "--taps", "stem")
    assert code == 0
    assert [f["module"] for f in spec["features"]] == ["stem"] and spec["doubts"] == []


def test_taps_are_recorded_and_replayed_by_update(tmp_path):
    out = tmp_path / "cnn"
    code, data = run_json(
        "new-backbone", CNN, "--taps", "stem,stage1.0", "--out", str(out), "--no-verify"
    )
    assert code == 0, data
    backbone = Path(data["package"]) / "backbone.py"
    assert '"module": "model.stage1.0"' in backbone.read_text()
    state_file = out / ".scaffold" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["options"]["taps"] == ["stem", "stage1.0"]
    assert [(f["module"], f["num_chs"]) for f in state["spec"]["features"]] == [
        ("stem", 8),
        ("stage1.0", 16),
    ]
    code, data = run_json("update", str(out), "--no-verify")
    assert code == 0 and data["changes"] == [] and data["analysis_changes"] == [], data
    code, data = run_json("update", str(out), "--no-verify", "--taps", "stage1,stage2")
    assert code == 0, data
    state = json.loads(state_file.read_text())
    assert state["options"]["taps"] == ["stage1", "stage2"]
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in state["spec"]["features"]] == [
        ("stage1", 16, 4),
        ("stage2", 32, 8),
    ]
    text = backbone.read_text()
    assert '"module": "model.stage1.0"' not in text and '"module": "model.stage2"' in text


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("stage1,nope", "--taps 'nope': the model has no module nope"),
        ("pool", "--taps 'pool': its output ((2, 32, 1, 1)) is not a feature map of the 64x64"),
        ("head", "--taps 'head': its output ((2, 10)) is not a feature map of the 64x64"),
        ("stem (call 1)", "--taps 'stem (call 1)': stem runs 1 time(s) only"),
        ("stem[0]", "--taps 'stem[0]': stem returns no item 0"),
        ("stem x", "--taps 'stem x': expected MODULE, MODULE[KEY], input of MODULE or"),
    ],
)
def test_a_tap_that_is_not_a_feature_map_of_a_module_is_one_line_and_exit_2(tmp_path, given, said):
    done = run_cli("inspect", CNN, "--taps", given)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {said}"), done.stderr
    out = tmp_path / "never"
    done = run_cli("new-backbone", CNN, "--taps", given, "--out", str(out), "--no-verify")
    assert done.returncode == 2 and not out.exists()


def test_a_last_layer_that_narrows_to_what_the_model_returns_is_head_like_until_tapped():
    """A 1x1 conv from 64 channels to 3 classes, returned as it is: the analysis would take it as
    the last level; it says so, and the taps it names (what enters the conv) settle it."""
    spec = analyse(str(MODELS / "narrow_end.py"))
    assert [(f.module, f.num_chs, f.reduction) for f in spec.selected][-1] == ("classify", 3, 8)
    (doubt,) = spec.doubts
    assert doubt.kind == "head-like"
    assert "narrows 64 channels to 3" in doubt.message
    assert doubt.flag == "--taps s1,s2,input of classify"
    settled = analyse(str(MODELS / "narrow_end.py"), taps=("s1", "s2", "input of classify"))
    assert settled.doubts == ()
    assert [(f.module, f.source, f.num_chs) for f in settled.selected] == [
        ("s1", "hook", 16),
        ("s2", "hook", 32),
        ("classify", "input", 64),
    ]


def test_input_channels_no_feature_depends_on_are_a_doubt():
    """One encoder on each half of the bands and modules that take the differences: taps on one
    image's encoder leave the other image's bands out of every feature, which is said, with the
    channels, rather than verified."""
    spec = analyse(str(MODELS / "siamese_modules.py"))
    unused = [d for d in spec.doubts if d.kind == "input-unused"]
    assert len(unused) == 1, spec.doubts
    assert unused[0].message.startswith("input channels 3-5 of 6 reach no feature")
    # A backbone whose features read every band raises no such doubt.
    assert not [
        d for d in analyse(str(MODELS / "narrow_end.py")).doubts if d.kind == "input-unused"
    ]
