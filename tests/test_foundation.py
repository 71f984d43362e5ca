"""Foundation models held to the truth: each feature equals the model's own stream, read with
hooks on a plain copy of the model with the same weights (temporal tokens frame by frame)."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from scaffold.pipeline import analyse
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.verify.ladder import verify_dir
from scaffold.write.state import read_state

from .conftest import MODELS, run_cli, run_json

TEMPORAL_VIT = str(MODELS / "temporal_vit.py")


def features(spec):
    return [
        (f.module, f.num_chs, f.reduction, f.layout, f.num_frames, f.prefix_tokens)
        for f in spec.features
    ]


def checks(report) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in report.checks}


def fresh_backbone(name: str, out: Path, **kwargs):
    """The generated backbone, imported afresh from its folder (as verify does)."""
    import timm

    for mod in [m for m in sys.modules if m.split(".")[0] == name]:
        del sys.modules[mod]
    sys.path.insert(0, str(out))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Overwriting")
            __import__(name)
    finally:
        sys.path.remove(str(out))
    return timm.create_model(name, **kwargs).eval()


def block_stream(model: nn.Module, blocks: list[nn.Module], x: torch.Tensor, call) -> list:
    """What each of `blocks` returns when `call(model, x)` runs: forward hooks."""
    seen: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda m, a, out: seen.append(out)) for b in blocks]
    try:
        with torch.no_grad():
            call(model, x)
    finally:
        for h in handles:
            h.remove()
    return seen


def frames_apart(tokens: torch.Tensor, prefix: int, frames: int, h: int, w: int) -> torch.Tensor:
    """(B, prefix + T*h*w, C) tokens -> (B, T, C, h, w): each frame's map on its own."""
    x = tokens[:, prefix:]
    return x.reshape(x.shape[0], frames, h, w, x.shape[-1]).permute(0, 1, 4, 2, 3)


def assert_frames_equal(backbone, x: torch.Tensor, stream: list[torch.Tensor], prefix: int):
    """The backbone's tokens are the stream; stacked into channels, frame t's channels are
    frame t of the stream; their mean over time is the mean of the stream's frames."""
    frames, (h, w) = x.shape[2], (x.shape[-2] // 16, x.shape[-1] // 16)
    with torch.no_grad():
        tokens = backbone(x)
        stacked = backbone.prepare_features_for_image_model(tokens)
    assert len(tokens) == len(stream) == 4
    for got, want, image in zip(tokens, stream, stacked, strict=True):
        torch.testing.assert_close(got, want)
        apart = frames_apart(want, prefix, frames, h, w)
        channels = want.shape[-1]
        assert image.shape == (x.shape[0], frames * channels, h, w)
        for t in range(frames):
            torch.testing.assert_close(image[:, t * channels : (t + 1) * channels], apart[:, t])


# -- 1. temporal tokens ---------------------------------------------------------------------------
TEMPORAL_FEATURES = [(f"blocks.{i}", 32, 16, "NTLC", 4, 1) for i in range(4)]


def same_weights(dst, src) -> None:
    """Copy the weights of `src` into `dst`, one a generated backbone and the other a plain
    copy of the person's model: the keys that differ are only those of the modules the
    backbone was built without (what runs after its last feature)."""
    backbone = dst if hasattr(dst, "removed_modules") else src
    plain_dst = dst.model if dst is backbone else dst
    state = src.model.state_dict() if src is backbone else src.state_dict()
    done = plain_dst.load_state_dict(state, strict=False)
    removed = tuple(m.removeprefix("model.") + "." for m in backbone.removed_modules)
    for key in (*done.missing_keys, *done.unexpected_keys):
        assert key.startswith(removed), (key, backbone.removed_modules)


def test_temporal_vit_tokens_are_frames_of_a_grid_as_class_and_as_builder():
    # 65 tokens of a (6, 4, 64, 64) input: a class token and 4 frames of 4x4, not an 8x8 grid
    # at reduction 8 (what 1 + 64 tokens of one 64x64 image would be).
    spec = analyse(f"{TEMPORAL_VIT}:TemporalViT")
    assert spec.input_shape == (1, 6, 4, 64, 64)
    assert features(spec) == TEMPORAL_FEATURES
    assert [f.grid for f in spec.features] == [(4, 4)] * 4
    assert any("hold 4 frame(s) of the 4-frame input" in n for n in spec.notes)
    # The builder's model returns every block's tokens as a list: taken at its word, as frames.
    built = analyse(f"{TEMPORAL_VIT}:temporal_vit_features")
    assert [(f.source, f.key) for f in built.features] == [("output", i) for i in range(4)]
    assert [f[1:] for f in features(built)] == [f[1:] for f in TEMPORAL_FEATURES]


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["TemporalViT", "temporal_vit_features"])
def test_temporal_vit_features_are_its_stream_frame_by_frame(tmp_path, name):
    result = generate(Options(f"{TEMPORAL_VIT}:{name}", {}, out=tmp_path / "tvit"))
    report = verify_dir(result.out)
    assert report.ok, checks(report)
    assert checks(report)["sizes"][1].endswith("and 64x64 with 8 frames")

    backbone = fresh_backbone(result.backbone, result.out, temporal_reduction="stack")
    assert backbone.feature_info.channels() == [4 * 32] * 4  # frames stacked into channels
    plain = type(backbone.model)()  # the person's class (the builder's), with its defaults
    same_weights(plain, backbone)
    plain.eval()
    for frames in (4, 8):  # the analysed frames, and twice as many
        torch.manual_seed(frames)
        x = torch.rand(3, 6, frames, 64, 64)
        stream = block_stream(plain, list(plain.blocks), x, lambda m, v: m(v))
        assert_frames_equal(backbone, x, stream, prefix=1)
    mean = fresh_backbone(result.backbone, result.out)  # the default: the frames' mean
    same_weights(mean, plain)
    with torch.no_grad():
        images = mean.prepare_features_for_image_model(mean(x))
    torch.testing.assert_close(images[0], frames_apart(stream[0], 1, 8, 4, 4).mean(dim=1))


def test_the_old_reading_of_temporal_tokens_fails_the_sizes_check(tmp_path):
    result = generate(Options(f"{TEMPORAL_VIT}:TemporalViT", {}, out=tmp_path / "tvit"))
    backbone_py = result.package / "backbone.py"
    source = backbone_py.read_text()
    # The reading before frames were measured: 1 + 64 tokens as one 8x8 grid at reduction 8.
    old = re.sub(r'"reduction": 16, "layout": "NTLC"', r'"reduction": 8, "layout": "NLC"', source)
    assert old.count('"layout": "NLC"') == 4
    backbone_py.write_text(old)
    found = checks(verify_dir(result.out, quick=True))
    # At the analysed frames every check passes: the misreading is consistent there ...
    assert found["features"][0] and found["determinism"][0], found
    # ... and at twice the frames the tokens are no longer an 8x8 grid.
    ok, detail = found["sizes"]
    assert not ok
    assert detail.startswith("at 8 frames the backbone raised ValueError: 128 tokens do not fit")
    assert detail.endswith("the features' layout does not follow the frames")


@pytest.mark.e2e
def test_terratorch_prithvi_vit_with_frames_end_to_end(tmp_path):
    from terratorch.models.backbones.prithvi_mae import PrithviViT

    config = {"num_frames": 4, "in_chans": 6, "img_size": 64, "embed_dim": 32, "depth": 4}
    config["num_heads"] = 2
    args = [a for k, v in config.items() for a in ("--arg", f"{k}={v}")]
    target = "terratorch.models.backbones.prithvi_mae:PrithviViT"
    out = tmp_path / "prithvi"
    code, data = run_json("new-backbone", target, *args, "--out", str(out))
    assert code == 0 and data["verified"] is True, data
    assert data["input_shape"] == [1, 6, 4, 64, 64]
    assert features(read_state(out).spec) == TEMPORAL_FEATURES

    backbone = fresh_backbone(data["backbone"], out, temporal_reduction="stack")
    plain = PrithviViT(**config).eval()
    same_weights(plain, backbone)
    for frames in (4, 8):
        torch.manual_seed(frames)
        x = torch.rand(2, 6, frames, 64, 64)
        # forward_features never masks: the blocks' stream in grid order
        stream = block_stream(plain, list(plain.blocks), x, lambda m, v: m.forward_features(v))
        assert_frames_equal(backbone, x, stream, prefix=1)


# -- 2. the stream inside runs of blocks ----------------------------------------------------------
def summed_stream(layers, x: torch.Tensor, bias: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream after each block of ModuleList([attention, feed-forward]) pairs, as
    the model's own loop sums it."""
    stream = []
    for attn, ffn in layers:
        x = attn(x, bias) + x
        x = ffn(x) + x
        stream.append(x)
    return stream


@pytest.mark.e2e
def test_blocks_summed_in_python_are_tapped_at_the_stream(tmp_path):
    spec = analyse(str(MODELS / "summed_blocks.py"))
    # Not the attention sub-layers' outputs (the residual's delta): what flows on after each
    # block, what enters the next block's first member and, after the last, the final norm.
    expected = [f"transformer.layers.{i}.0" for i in (1, 2, 3)] + ["transformer.norm_out"]
    assert [(f.module, f.source, f.num_chs, f.reduction, f.layout) for f in spec.features] == [
        (m, "input", 32, 8, "NLC") for m in expected
    ]
    assert spec.head_modules == ("transformer.norm_out",)

    result = generate(Options(str(MODELS / "summed_blocks.py"), {}, out=tmp_path / "summed"))
    report = verify_dir(result.out)
    assert report.ok, checks(report)
    backbone = fresh_backbone(result.backbone, result.out)
    plain = type(backbone.model)()
    same_weights(plain, backbone)
    plain.eval()
    x = torch.rand(3, 4, 64, 64)
    with torch.no_grad():
        got = backbone(x)
        tokens = plain.patches(x)
        bias = torch.zeros(1, 1, tokens.shape[1], tokens.shape[1])
        stream = summed_stream(plain.transformer.layers, tokens, bias)
    assert len(got) == len(stream) == 4
    for a, b in zip(got, stream, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.e2e
def test_torchgeo_croma_end_to_end(tmp_path):
    from torchgeo.models.croma import CROMA

    config = {"modalities": ["optical"], "encoder_dim": 64, "encoder_depth": 4}
    config |= {"num_heads": 16, "image_size": 64}
    args = [a for k, v in config.items() for a in ("--arg", f"{k}={v}")]
    out = tmp_path / "croma"
    code, data = run_json(
        "new-backbone",
        "torchgeo.models.croma:CROMA",
        *args,
        "--image-arg",
        "x_optical",
        "--input-shape",
        "12,64,64",
        "--out",
        str(out),
    )
    assert code == 0 and data["verified"] is True, data
    spec = read_state(out).spec
    where = "s2_encoder.transformer"
    expected = [f"{where}.layers.{i}.0" for i in (1, 2, 3)] + [f"{where}.norm_out"]
    assert [(f.module, f.source, f.num_chs, f.reduction) for f in spec.features] == [
        (m, "input", 64, 8) for m in expected
    ]

    backbone = fresh_backbone(data["backbone"], out)
    plain = CROMA(**config).eval()
    same_weights(plain, backbone)
    x = torch.rand(2, 12, 64, 64)
    encoder = plain.s2_encoder
    with torch.no_grad():
        got = backbone(x)
        p = encoder.patch_size
        patches = x.reshape(2, 12, 8, p, 8, p).permute(0, 2, 4, 1, 3, 5).reshape(2, 64, -1)
        tokens = encoder.linear_input(patches)
        stream = summed_stream(encoder.transformer.layers, tokens, plain.attn_bias)
    for a, b in zip(got, stream, strict=True):
        torch.testing.assert_close(a, b)


# -- 3. channel parameters are counts -------------------------------------------------------------
FIVE_BANDS = ["blue", "green", "red", "nir", "swir16"]


@pytest.mark.e2e
def test_a_list_of_band_names_is_a_band_list_not_a_channel_count(tmp_path):
    target = str(MODELS / "band_names.py")
    default = analyse(target)
    assert (default.input_shape, default.in_chans_arg) == ((1, 4, 64, 64), None)
    spec = analyse(target, {"bands": FIVE_BANDS})
    assert (spec.input_shape, spec.in_chans_arg) == ((1, 5, 64, 64), None)
    assert [(f.module, f.num_chs, f.reduction, f.layout) for f in spec.features] == [
        (f"blocks.{i}", 32, 8, "NLC") for i in range(3)
    ]

    result = generate(Options(target, {"bands": FIVE_BANDS}, out=tmp_path / "bands"))
    source = (result.package / "backbone.py").read_text()
    assert "IN_CHANS_ARG: str | None = None" in source
    report = verify_dir(result.out)
    assert report.ok, checks(report)
    backbone = fresh_backbone(result.backbone, result.out)
    assert backbone.model.bands == FIVE_BANDS  # passed on as given, not overwritten by a count
    plain = type(backbone.model)(bands=FIVE_BANDS)
    same_weights(plain, backbone)
    plain.eval()
    x = torch.rand(2, 5, 64, 64)
    stream = block_stream(plain, list(plain.blocks), x, lambda m, v: m(v))
    with torch.no_grad():
        got = backbone(x)
    for a, b in zip(got, stream, strict=True):
        torch.testing.assert_close(a, b)


# -- 4. forward arguments written as code that runs -----------------------------------------------
META = [float("nan"), 45.0, float("nan"), 1.0]  # longitude and time unknown
WAVES_NM = [490, 560, 665, 842, 1610]
WIDTHS_NM = [65, 35, 30, 115, 90]


@pytest.mark.e2e
def test_nan_metadata_is_python_that_runs_and_the_bands_do_not_follow_the_flag_order(tmp_path):
    from scaffold.resolve.target import parse_forward_args

    target = str(MODELS / "spectral_meta.py")
    flags = {
        "metadata": "metadata=[.nan, 45.0, .nan, 1.0]",
        "wavelengths": f"wavelengths={WAVES_NM}",
        "bandwidths": f"bandwidths={WIDTHS_NM}",
    }
    specs = []
    for order in (
        ["metadata", "wavelengths", "bandwidths"],
        ["wavelengths", "bandwidths", "metadata"],
    ):
        forward_args = parse_forward_args([flags[k] for k in order])
        specs.append(analyse(target, {}, None, forward_args))
    for spec in specs:  # 5 bands (two lists agree), not the 4 values of the metadata
        assert spec.input_shape == (1, 5, 64, 64)
        assert set(spec.forward_call["per_band"]) == {"wavelengths", "bandwidths"}
        assert [(f.module, f.num_chs, f.reduction, f.layout) for f in spec.features] == [
            (f"blocks.{i}", 24, 8, "NLC") for i in range(3)
        ]

    forward_args = parse_forward_args([flags[k] for k in flags])
    result = generate(Options(target, {}, out=tmp_path / "meta", forward_args=forward_args))
    backbone_py = result.package / "backbone.py"
    source = backbone_py.read_text()
    assert '"metadata": [float("nan"), 45.0, float("nan"), 1.0]' in source
    report = verify_dir(result.out)
    assert report.ok, checks(report)

    backbone = fresh_backbone(result.backbone, result.out)
    plain = type(backbone.model)()
    same_weights(plain, backbone)
    plain.eval()
    x = torch.rand(2, 5, 64, 64)
    call = lambda m, v: m(v, torch.tensor(META), WAVES_NM, WIDTHS_NM)  # noqa: E731
    stream = block_stream(plain, list(plain.blocks), x, call)
    with torch.no_grad():
        got = backbone(x)
    assert all(torch.isfinite(f).all() for f in got)
    for a, b in zip(got, stream, strict=True):
        torch.testing.assert_close(a, b)

    # A literal that does not run: the import check names the generated file and its line.
    line = next(i for i, text in enumerate(source.splitlines(), 1) if '"metadata": [float' in text)
    backbone_py.write_text(source.replace('float("nan"), 45.0', "nan, 45.0"))
    ok, detail = checks(verify_dir(result.out, quick=True))["import"]
    assert not ok
    assert f"failed at {result.backbone}/backbone.py:{line}: NameError: name 'nan'" in detail


# -- 5. input guessing tries again ----------------------------------------------------------------
@pytest.mark.e2e
def test_a_conv3d_over_the_bands_of_an_image_is_guessed_temporal_then_2d(tmp_path):
    target = str(MODELS / "band_conv3d.py")
    spec = analyse(target)
    # The Conv3d makes the first guess a time series; the forward refuses it, the 2-D guess runs.
    assert spec.input_shape == (1, 3, 64, 64)
    assert [(f.module, f.num_chs, f.reduction, f.layout) for f in spec.features] == [
        (f"blocks.{i}", 24, 8, "NLC") for i in range(3)
    ]
    result = generate(Options(target, {}, out=tmp_path / "conv3d"))
    report = verify_dir(result.out)
    assert report.ok, checks(report)
    backbone = fresh_backbone(result.backbone, result.out)
    plain = type(backbone.model)()
    same_weights(plain, backbone)
    plain.eval()
    x = torch.rand(2, 3, 64, 64)
    stream = block_stream(plain, list(plain.blocks), x, lambda m, v: m(v))
    with torch.no_grad():
        got = backbone(x)
    for a, b in zip(got, stream, strict=True):
        torch.testing.assert_close(a, b)


def test_a_forward_missing_an_input_names_the_parameter_that_chooses_inputs():
    from scaffold.errors import ScaffoldError

    target = f"{MODELS / 'joint_modal.py'}:JointModalEncoder"
    with pytest.raises(ScaffoldError) as info:
        analyse(target, {}, (12, 32, 32), {}, "x_optical")
    message = str(info.value)
    assert "UnboundLocalError: cannot access local variable 'sar'" in message
    assert "the constructor chooses its inputs with modalities=['sar', 'optical']" in message
    # With the one modality the image goes to, it runs.
    spec = analyse(target, {"modalities": ["optical"]}, (12, 32, 32), {}, "x_optical")
    assert [(f.num_chs, f.reduction) for f in spec.features] == [(16, 8)]


def test_a_class_without_a_forward_says_so(tmp_path):
    done = run_cli("inspect", f"{MODELS / 'joint_modal.py'}:Unfinished")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: Unfinished does not implement forward (nn.Module's placeholder raises "
        "NotImplementedError); it has forward_features: target a builder that sets a forward, "
        "or a subclass that defines one"
    )


# -- 6. outputs that are lists of dicts -----------------------------------------------------------
@pytest.mark.e2e
def test_a_forward_returning_a_list_of_dicts_is_searched_for_its_tensors(tmp_path):
    target = str(MODELS / "list_of_dicts.py")
    spec = analyse(target)
    assert [(f.source, f.key, f.num_chs, f.reduction, f.layout) for f in spec.features] == [
        ("output", (i, "S2L2A"), 24, 8, "NLC") for i in range(3)
    ]
    result = generate(Options(target, {}, out=tmp_path / "dicts"))
    assert read_state(result.out).spec.features == spec.features  # the key path round-trips
    report = verify_dir(result.out)
    assert report.ok, checks(report)
    backbone = fresh_backbone(result.backbone, result.out)
    plain = type(backbone.model)()
    same_weights(plain, backbone)
    plain.eval()
    x = torch.rand(2, 4, 64, 64)
    stream = block_stream(plain, list(plain.blocks), x, lambda m, v: m(v))
    with torch.no_grad():
        got = backbone(x)
    for a, b in zip(got, stream, strict=True):
        torch.testing.assert_close(a, b)
