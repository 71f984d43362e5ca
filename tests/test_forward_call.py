"""Foundation-model forwards: arguments beside the image, dict inputs, keyword modalities, and
encoders that mask tokens at random (traced and generated with masking off, checked by verify)."""

import re
from types import SimpleNamespace

import pytest
import torch
import yaml

from scaffold.errors import ScaffoldError
from scaffold.pipeline import analyse
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.spec import BackboneSpec
from scaffold.verify.ladder import verify_dir
from scaffold.write.state import Options as StateOptions
from scaffold.write.state import read_state

from .conftest import MODELS, run_cli, run_json

WAVES = [0.49, 0.56, 0.665, 0.842]


def features(spec):
    return [(f.module, f.num_chs, f.reduction, f.layout, f.prefix_tokens) for f in spec.features]


def checks(report) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in report.checks}


def fresh_backbone(result, **kwargs):
    """The generated backbone, imported afresh from its folder (as verify does)."""
    import sys
    import warnings

    import timm

    for mod in [m for m in sys.modules if m.split(".")[0] == result.backbone]:
        del sys.modules[mod]
    sys.path.insert(0, str(result.out))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Overwriting")
            __import__(result.backbone)
    finally:
        sys.path.remove(str(result.out))
    return timm.create_model(result.backbone, **kwargs).eval()


# -- analysis -------------------------------------------------------------------------------------
def test_wavelength_conditioned_embedding_takes_its_bands_from_the_wavelengths():
    spec = analyse(str(MODELS / "wavelength.py"), {}, None, {"wavelengths": WAVES})
    # No channel parameter and no convolution: the 4 wavelengths give the channels.
    assert spec.input_shape == (1, 4, 64, 64)
    assert features(spec) == [(f"blocks.{i}", 24, 8, "NLC", 0) for i in range(3)]
    # forward indexes wavelengths[:, None]: a list fails, a (C,) tensor works.
    assert spec.forward_call == {
        "image": "x",
        "image_positional": True,
        "args": {"wavelengths": WAVES},
        "forms": {"wavelengths": "tensor"},
        "per_band": ["wavelengths"],
        "fixed_noise": False,
    }
    assert BackboneSpec.from_json(spec.to_json()) == spec


def test_forward_options_that_do_not_fit_are_named():
    target = str(MODELS / "wavelength.py")
    with pytest.raises(
        ScaffoldError, match=r"SpectralViT.forward needs wavelengths.*--forward-arg"
    ):
        analyse(target, {})
    with pytest.raises(ScaffoldError, match=r"has no parameter bands \(it takes: x, wavelengths\)"):
        analyse(target, {}, None, {"wavelengths": WAVES, "bands": 4})
    with pytest.raises(ScaffoldError, match=r"--image-arg y: .* has no parameter y"):
        analyse(target, {}, None, {"wavelengths": WAVES}, "y")


def test_old_state_without_the_call_fields_still_reads():
    spec = analyse(str(MODELS / "cnn.py"))
    assert spec.forward_call == {}  # a plain forward(x): nothing recorded
    data = spec.to_dict()
    del data["forward_call"]
    assert BackboneSpec.from_dict(data).forward_call == {}
    options = StateOptions.from_dict({"target": "m.py", "args": {}})
    assert options.forward_args == {} and options.image_arg is None


def test_mae_encoder_is_traced_with_masking_off_in_grid_order():
    spec = analyse(str(MODELS / "mae.py"))
    assert spec.input_shape == (1, 3, 32, 32)
    # 16 tokens + the class token: every token, not the 4 + 1 that mask_ratio=0.75 keeps.
    assert features(spec) == [(f"blocks.{i}", 16, 8, "NLC", 1) for i in range(3)]
    call = spec.forward_call
    assert call["args"] == {"mask_ratio": 0.0} and call["fixed_noise"] is True
    notes = " ".join(spec.notes)
    assert "masking off: forward argument mask_ratio=0.0 (its default 0.75" in notes
    assert "draws random numbers in eval mode (rand x1)" in notes


def test_dict_input_with_per_band_ids():
    spec = analyse(
        str(MODELS / "dict_in.py"), {}, (4, 32, 32), {"x_dict.chn_ids": [0, 3, 5, 7]}, "x_dict.imgs"
    )
    assert features(spec) == [("blocks.0", 20, 4, "NLC", 0), ("blocks.1", 20, 4, "NLC", 0)]
    # chn_ids is (B, C): neither the list nor a (C,) tensor works, the batched tensor does.
    assert spec.forward_call["forms"] == {"x_dict.chn_ids": "batched"}
    assert spec.forward_call["per_band"] == ["x_dict.chn_ids"]


def test_keyword_modality_of_a_two_modality_encoder():
    spec = analyse(str(MODELS / "two_modal.py"), {}, (12, 32, 32), {}, "x_optical")
    assert features(spec) == [(f"optical.blocks.{i}", 24, 8, "NLC", 0) for i in range(4)]
    assert spec.forward_call["image"] == "x_optical"
    assert spec.forward_call["image_positional"] is False  # x_sar comes first


# -- generated code and verify --------------------------------------------------------------------
def _mae_features_and_by_hand(backbone, x):
    """The generated backbone's features of `x`, and the same computed by hand in grid order:
    no shuffle, no mask."""
    with torch.no_grad():
        got = backbone(x)
        m = backbone.model
        t = m.patch_embed(x).flatten(2).transpose(1, 2) + m.pos_embed
        t = torch.cat([m.cls_token.expand(x.shape[0], -1, -1), t], dim=1)
        expected = []
        for block in m.blocks:
            t = block(t)
            expected.append(t)
    return got, expected


def test_generated_mae_backbone_never_masks_and_a_hand_edit_that_masks_fails(tmp_path):
    result = generate(Options(str(MODELS / "mae.py"), {}, out=tmp_path / "mae"))
    source = (result.package / "backbone.py").read_text()
    assert 'FORWARD_ARGS: dict[str, Any] = {"mask_ratio": 0.0}' in source
    assert "FIXED_NOISE: bool = True" in source

    backbone = fresh_backbone(result)
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)  # a batch size other than the traced one
    # The generated forward runs under a TorchFunctionMode (the fixed noise), which keeps
    # nn.MultiheadAttention off its fused fast path; the hand computation takes the same path
    # (torch 2.14's two paths differ by about 1e-3 here).
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        got, expected = _mae_features_and_by_hand(backbone, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    assert [tuple(f.shape) for f in got] == [(3, 17, 16)] * 3
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)

    report = checks(verify_dir(result.out, quick=True))
    assert report["determinism"][0], report["determinism"]

    backbone_py = result.package / "backbone.py"
    # The person switches masking back on: the tokens the mask drops are missing.
    backbone_py.write_text(source.replace('{"mask_ratio": 0.0}', '{"mask_ratio": 0.75}'))
    ok, detail = checks(verify_dir(result.out, quick=True))["determinism"]
    assert not ok
    assert "feature 0 (`model.blocks.0`) has 5 tokens where the 4x4 grid" in detail
    assert "make 17: the forward drops tokens" in detail
    # ... or takes the fixed noise away: the token shuffle differs from call to call.
    backbone_py.write_text(source.replace("FIXED_NOISE: bool = True", "FIXED_NOISE: bool = False"))
    report = verify_dir(result.out, quick=True)
    ok, detail = checks(report)["determinism"]
    assert not ok and not report.ok
    assert re.search(
        r"^not deterministic: in eval mode the same input twice gave different", detail
    )


def test_per_band_argument_that_disagrees_with_in_chans(tmp_path):
    result = generate(
        Options(
            str(MODELS / "wavelength.py"),
            {},
            out=tmp_path / "w",
            forward_args={"wavelengths": WAVES},
        )
    )
    config = yaml.safe_load(result.benchmark_config.read_text())
    model_args = config["defaults"]["terratorch_task"]["model_args"]
    assert model_args["backbone_forward_args"] == {"wavelengths": WAVES}
    assert model_args["backbone_in_chans"] == 4

    backbone = fresh_backbone(result)
    with torch.no_grad():
        assert [tuple(f.shape) for f in backbone(torch.rand(1, 4, 64, 64))] == [(1, 64, 24)] * 3
    # Other bands: in_chans and the wavelengths change together in the YAML ...
    six = fresh_backbone(result, in_chans=6, forward_args={"wavelengths": WAVES + [1.6, 2.2]})
    with torch.no_grad():
        assert six(torch.rand(2, 6, 64, 64))[0].shape == (2, 64, 24)

    # ... and verify names the one that was forgotten.
    text = result.benchmark_config.read_text().replace(
        "backbone_in_chans: 4", "backbone_in_chans: 6"
    )
    result.benchmark_config.write_text(text)
    ok, detail = checks(verify_dir(result.out, quick=True))["forward args"]
    assert not ok
    assert detail == (
        "task 'smoke': backbone_forward_args.wavelengths has 4 values, backbone_in_chans is 6: "
        "give one wavelengths value per band"
    )


# -- end to end -----------------------------------------------------------------------------------
@pytest.mark.e2e
def test_dict_input_model_end_to_end_and_update_repeats_the_options(tmp_path):
    out = tmp_path / "dict_in"
    code, data = run_json(
        "new-backbone",
        str(MODELS / "dict_in.py"),
        "--image-arg",
        "x_dict.imgs",
        "--forward-arg",
        "x_dict.chn_ids=[0, 3, 5, 7]",
        "--out",
        str(out),
    )
    assert code == 0 and data["verified"] is True, data
    assert [c["name"] for c in data["checks"]] == [
        "folder",
        "import",
        "features",
        "features match model",
        "determinism",
        "forward args",
        "data",
        "factory",
        "trainable",
        "fit configs",
        "sizes",
        "benchmark",
    ]
    assert data["input_shape"] == [1, 4, 64, 64]
    code, data = run_json("update", str(out), "--no-verify")
    assert code == 0 and data["changes"] == [], data  # the same options: nothing changes

    done = run_cli("inspect", str(MODELS / "dict_in.py"), "--image-arg", "x_dict.imgs")
    assert done.returncode == 2  # chn_ids is missing: the model's KeyError, as bad input
    assert "forward raised on an input of shape (2, 1, 64, 64): KeyError: 'chn_ids'" in done.stderr


@pytest.mark.e2e
def test_torchgeo_dofa_end_to_end(tmp_path):
    code, data = run_json(
        "new-backbone",
        "torchgeo.models.dofa:dofa_small_patch16_224",
        "--arg",
        "img_size=64",
        "--forward-arg",
        "wavelengths=[0.665, 0.56, 0.49, 0.842]",
        "--out",
        str(tmp_path / "dofa"),
    )
    assert code == 0 and data["verified"] is True, data
    assert data["input_shape"] == [1, 4, 64, 64]
    detail = {c["name"]: c["detail"] for c in data["checks"]}
    assert detail["features"] == "4 features for a (2, 4, 64, 64) input: " + ", ".join(
        ["384x4x4"] * 4
    )


@pytest.mark.e2e
def test_terratorch_prithvi_vit_end_to_end_without_flags(tmp_path):
    args = ["--arg", "embed_dim=192", "--arg", "depth=4", "--arg", "num_heads=3"]
    target = "terratorch.models.backbones.prithvi_mae:PrithviViT"
    out = tmp_path / "prithvi"
    code, data = run_json("new-backbone", target, *args, "--arg", "img_size=64", "--out", str(out))
    assert code == 0 and data["verified"] is True, data
    spec = read_state(out).spec
    assert [(f.module, f.num_chs, f.reduction, f.layout) for f in spec.features] == [
        (f"blocks.{i}", 192, 16, "NLC") for i in range(4)
    ]
    assert spec.forward_call["args"] == {"mask_ratio": 0.0} and spec.forward_call["fixed_noise"]

    # Grid order: the blocks' tokens are those of PrithviViT.forward_features (which never masks).
    # Built whole (prune=False): forward_features needs the final norm the backbone drops.
    backbone = fresh_backbone(SimpleNamespace(backbone=data["backbone"], out=out), prune=False)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        got = backbone(x)
        expected = backbone.model.forward_features(x)
    for a, b in zip(got[:3], expected[:3], strict=True):  # its last is normed
        torch.testing.assert_close(a, b)


def test_cli_forward_arg_syntax_is_checked():
    done = run_cli("inspect", str(MODELS / "wavelength.py"), "--forward-arg", "wavelengths")
    assert done.returncode == 2
    assert "--forward-arg 'wavelengths': expected NAME=VALUE or PARAM.KEY=VALUE" in done.stderr
    assert "Traceback" not in done.stderr


# -- inspect imports the model's module alone -----------------------------------------------------
NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1){extra}

    def forward(self, x):
        return self.conv(x)
"""


def test_inspect_defers_the_parent_packages_init(tmp_path, monkeypatch):
    import sys

    from scaffold.resolve.lightimport import parents_deferred

    marker = tmp_path / "init_ran"
    for pkg, extra in (("heavy_pkg", ""), ("needy_pkg", "\n        assert SETUP_BY_INIT")):
        (tmp_path / pkg / "sub").mkdir(parents=True)
        init = f"open({str(marker)!r}, 'a').write('{pkg} ')\nSETUP_BY_INIT = True\n"
        (tmp_path / pkg / "__init__.py").write_text(init)
        (tmp_path / pkg / "sub" / "__init__.py").write_text("")
        source = NET.format(extra=extra)
        if pkg == "needy_pkg":
            source = "from needy_pkg import SETUP_BY_INIT\n" + source
        (tmp_path / pkg / "sub" / "net.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))

    with parents_deferred():
        spec = analyse("heavy_pkg.sub.net:Net")
        # A module that needs its package's __init__ is imported the usual way.
        needy = analyse("needy_pkg.sub.net:Net")
    assert [f.module for f in spec.features] == [f.module for f in needy.features] == ["conv"]
    assert marker.read_text() == "needy_pkg "  # heavy_pkg's __init__ never ran
    assert "heavy_pkg" not in sys.modules and "heavy_pkg.sub.net" not in sys.modules
    # Outside the context, a plain import runs the __init__ as usual.
    __import__("heavy_pkg.sub.net")
    assert marker.read_text() == "needy_pkg heavy_pkg "


def test_randomness_torch_does_not_see_is_noted(tmp_path):
    path = tmp_path / "noisy.py"
    path.write_text(
        "import numpy as np\nimport torch\nfrom torch import nn\n\n\n"
        "class Noisy(nn.Module):\n"
        "    def __init__(self) -> None:\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 8, 3, 2, 1)\n\n"
        "    def forward(self, x):\n"
        "        noise = torch.from_numpy(np.random.rand(*x.shape[1:])).float()\n"
        "        return self.conv(x + noise)\n"
    )
    spec = analyse(str(path))
    assert spec.forward_call == {}  # no torch draw to fix
    assert any(
        n.startswith("the forward gives different outputs for the same input in eval mode")
        for n in spec.notes
    ), spec.notes
