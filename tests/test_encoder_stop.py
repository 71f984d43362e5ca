"""The backbone is the encoder: its forward stops after the last feature, so a head that fits one
input size, or a decoder, is never called; the sizes check runs it at a second size."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from scaffold.pipeline import analyse
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.verify.ladder import verify_dir

from .conftest import MODELS, run_cli


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """Generated (not verified) and imported: model file -> (GenerateResult, timm name)."""
    import timm  # noqa: F401  (the registrations need it)

    root = tmp_path_factory.mktemp("encoder_stop")
    made = {}
    models = ("vgg_fixed_head", "unet", "shared_act_head", "fixed_pos", "fixed_grid", "unpadded")
    for model in models:
        result = generate(Options(str(MODELS / f"{model}.py"), {}, out=root / model))
        sys.path.insert(0, str(result.out))
        importlib.import_module(result.backbone)
        made[model] = result
    return made


def create(result, **kwargs):
    import timm

    return timm.create_model(result.backbone, **kwargs).eval()


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_pre_hook(hook)  # before the backbone's hook, which may end it
    return calls


def grids(features) -> list[tuple[int, ...]]:
    return [tuple(f.shape[1:]) for f in features]


def test_fixed_head_classifier_runs_at_two_sizes_without_its_head(backbones):
    result = backbones["vgg_fixed_head"]
    # Built whole (prune=False), the forward still stops before the head.
    backbone = create(result, prune=False)
    features_only = create(result, features_only=True)
    features_only.model.load_state_dict(backbone.state_dict(), strict=False)
    head_calls = count_calls(backbone.model.classifier)
    chans = [32, 64, 128, 128]
    for size in (64, 128):
        x = torch.rand(2, 3, size, size)
        with torch.no_grad():
            own = backbone(x)
            timm_features = features_only(x)
        expected = [(c, size // r, size // r) for c, r in zip(chans, (2, 4, 8, 16), strict=True)]
        assert grids(own) == expected and grids(timm_features) == expected
        for a, b in zip(own, timm_features, strict=True):
            assert torch.equal(a, b)
        # Stopping changes nothing in what was computed: the last feature is the whole trunk.
        with torch.no_grad():
            assert torch.equal(own[-1], backbone.model.features(x))
    assert head_calls == [0]
    # The whole model, head included, still fails at 128x128: the head is what was skipped.
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        backbone.model(torch.rand(2, 3, 128, 128))
    # Built as timm builds it, the backbone does not hold the head at all.
    for pruned in (create(result), features_only.model):
        assert pruned.removed_modules == ("model.classifier",)
        assert not any(k.startswith("model.classifier") for k in pruned.state_dict())


def test_the_head_is_in_the_spec_and_the_reports():
    assert analyse(str(MODELS / "vgg_fixed_head.py")).head_modules == ("classifier",)
    assert analyse(str(MODELS / "cnn.py")).head_modules == ("pool", "head")
    assert analyse(str(MODELS / "vit.py")).head_modules == ("norm", "head")
    # Features the model returns itself: the whole forward runs, nothing is skipped.
    assert analyse(str(MODELS / "list_out.py")).head_modules == ()
    done = run_cli("inspect", str(MODELS / "unet.py"))
    assert done.returncode == 0, done.stderr
    assert "never run: decoder" in " ".join(done.stdout.split())


def test_encoder_decoder_target_never_calls_the_decoder(backbones):
    result = backbones["unet"]
    backbone = create(result, prune=False)
    decoder_calls = count_calls(backbone.model.decoder)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        features = backbone(x)
        encoder = backbone.model.encoder(x)
    assert decoder_calls == [0]
    assert grids(features) == [(8, 64, 64), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert all(torch.equal(a, b) for a, b in zip(features, encoder, strict=True))
    with torch.no_grad():
        backbone.model(x)  # the model itself still runs whole
    assert decoder_calls == [1]


def test_a_module_called_in_the_encoder_and_in_the_head(backbones):
    """The taps are calls 0, 1 and 2 of one ReLU; its call 3 (in the head) is not run."""
    result = backbones["shared_act_head"]
    backbone = create(result)
    act_calls = count_calls(backbone.model.act)
    fc_calls = count_calls(backbone.model.fc1)
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, 128, 128))
    assert grids(features) == [(8, 64, 64), (16, 32, 32), (32, 16, 16)]
    assert act_calls == [3] and fc_calls == [0]


def test_forward_intermediates_honours_stop_early(backbones):
    backbone = create(backbones["vgg_fixed_head"], prune=False)
    head_calls = count_calls(backbone.model.classifier)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        last, features = backbone.forward_intermediates(x, stop_early=True)
        assert head_calls == [0]
        assert torch.equal(last, features[-1])  # the trunk up to the last feature
        logits, again = backbone.forward_intermediates(x, stop_early=False)
        assert head_calls == [1] and tuple(logits.shape) == (2, 10)
        assert all(torch.equal(a, b) for a, b in zip(features, again, strict=True))
        only = backbone.forward_intermediates(x, intermediates_only=True)
        assert head_calls == [1]  # nothing after the last feature is needed
        assert grids(only) == grids(features)
        with pytest.raises(RuntimeError, match="mat1 and mat2"):
            backbone.forward_intermediates(torch.rand(2, 3, 128, 128), stop_early=False)
    # Without its head, the whole forward ends at the last feature.
    pruned = create(backbones["vgg_fixed_head"])
    with torch.no_grad():
        last, features = pruned.forward_intermediates(x, stop_early=False)
    assert torch.equal(last, features[-1]) and grids(features) == grids(again)


def test_sizes_check_passes_at_twice_the_size(backbones):
    report = verify_dir(backbones["vgg_fixed_head"].out, quick=True)
    found = {c.name: (c.ok, c.detail) for c in report.checks}
    assert report.ok, found
    assert found["sizes"] == (True, "4 features on their grids at 64x64 and 128x128")


def test_sizes_check_reads_grids_as_the_analysis_does(backbones):
    """Unpadded convolutions lose a cell per stage (31, 15, 7 at 64 px; 63, 31, 15 at 128): the
    analysis reads those as reductions 2, 4, 8, and the sizes check accepts them the same way."""
    report = verify_dir(backbones["unpadded"].out, quick=True)
    found = {c.name: (c.ok, c.detail) for c in report.checks}
    assert found["features"] == (
        True,
        "3 features for a (2, 3, 64, 64) input: 8x31x31, 16x15x15, 32x7x7",
    )
    assert found["sizes"] == (True, "3 features on their grids at 64x64 and 128x128")


def test_sizes_check_names_the_module_that_needs_one_size(backbones):
    report = verify_dir(backbones["fixed_pos"].out, quick=True)
    found = {c.name: (c.ok, c.detail) for c in report.checks}
    assert found["features"][0] and found["factory"][0]  # fine at the analysed size
    ok, detail = found["sizes"]
    assert not ok
    assert detail.startswith(
        "at 128x128 (twice the analysed 64x64) `model.embed` (PatchEmbed, fixed_pos.py:15 in "
        "forward) raised RuntimeError: The size of tensor a (256) must match the size of "
        "tensor b (64)"
    )
    assert detail.endswith(
        "`model.embed` needs the analysed size 64x64; "
        "analyse at the size of your data with --input-shape 3,H,W"
    )


def test_sizes_check_fails_a_feature_off_its_grid(backbones):
    """Pooled to a fixed 8x8: reduction 8 at 64x64, and still 8x8 (not 16x16) at 128x128."""
    report = verify_dir(backbones["fixed_grid"].out, quick=True)
    found = {c.name: (c.ok, c.detail) for c in report.checks}
    assert found["features"][0]
    assert found["sizes"] == (
        False,
        (
            "at 128x128 feature 2 (`model.conv3`) of timm's features_only model has shape "
            "(2, 32, 8, 8), expected (B, 32, 16, 16) for reduction 8 (or up to 4 cells fewer: "
            "unpadded layers)"
        ),
    )


def test_sizes_check_builds_a_model_that_takes_its_size_for_the_second_size(generated):
    """The ViT's fixed positional embedding follows its `img_size` constructor parameter."""
    report = verify_dir(generated["vit"].out, quick=True)
    found = {c.name: (c.ok, c.detail) for c in report.checks}
    assert found["sizes"] == (
        True,
        "4 features on their grids at 32x48 and 64x96 (built with img_size=[64, 96])",
    )


def test_head_modules_round_trip_and_old_specs_read():
    from scaffold.spec import BackboneSpec

    spec = analyse(str(MODELS / "shared_act_head.py"))
    # The shared ReLU's fourth call is in the head, after its third (the last tap).
    assert spec.head_modules == ("fc1", "act", "fc2")
    data = spec.to_dict()
    assert BackboneSpec.from_dict(data) == spec
    del data["head_modules"]  # a state file written before the field existed
    assert BackboneSpec.from_dict(data).head_modules == ()
