"""A model with several inputs, its bands named per modality (``--bands 'a=...;b=...'``): the
analysis feeds every modality (the traced image is them stacked, each goes in by its name), so
no modality's modules are frozen as never reached and no `input-not-fed` doubt is left; the
generated backbone splits a stacked image the same way and takes a dict of them as it is."""

from __future__ import annotations

import pytest
import torch

from .conftest import MODELS, generated_backbone, model_class, run_cli, run_json

TWO = f"{MODELS / 'two_inputs.py'}:TwoInputs"
DICT = f"{MODELS / 'modality_dict.py'}:ModalityDictEncoder"
PER_MODALITY = "x_optical=BLUE,GREEN,RED,NIR_BROAD;x_sar=VV_REAL,VH_REAL"


def test_one_modality_fed_is_a_doubt_and_both_fed_is_none():
    code, one = run_json("inspect", TWO)
    assert code == 0
    assert [d["kind"] for d in one["doubts"]] == ["input-not-fed"]
    assert one["frozen"] == ["sar.weight", "sar.bias"] and one["input_shape"] == [1, 4, 64, 64]

    code, both = run_json("inspect", TWO, "--bands", PER_MODALITY)
    assert code == 0
    assert both["doubts"] == [] and both["frozen"] == []
    assert both["input_shape"] == [1, 6, 64, 64]  # 4 optical + 2 SAR channels, stacked
    call = both["forward_call"]
    # parameters of their own: the first modality takes the image's place
    assert call["image"] == "x_optical" and call["modalities"] == [["x_optical", 4], ["x_sar", 2]]


def test_a_dict_model_gets_its_modalities_as_items_of_its_dict():
    code, data = run_json("inspect", DICT, "--bands", "S2L2A=B02,B03,B04,B08;S1GRD=VV,VH")
    assert code == 0 and data["doubts"] == [] and data["frozen"] == []
    assert data["forward_call"]["image"] == "x.S2L2A"
    assert data["forward_call"]["modalities"] == [["S2L2A", 4], ["S1GRD", 2]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--bands", "x_optical=BLUE;x_sar=VV_REAL;x_optical=GREEN"],
            (
                "error: --bands: the bands of x_optical are split by another modality's; "
                "name each modality once (--bands 's2=B02,B03;s1=VV,VH')"
            ),
        ),
        (
            ["--bands", "x_optical=BLUE,GREEN,RED,NIR_BROAD;radar=VV_REAL,VH_REAL"],
            (
                "error: --bands modality radar: TwoInputs.forward has no parameter radar "
                "(it takes: x_optical, x_sar)"
            ),
        ),
        (
            ["--bands", "optical=BLUE,GREEN,RED,NIR_BROAD;sar=VV_REAL,VH_REAL"],
            (
                "error: --bands names sar, a parameter of the forward of its own, while the image "
                "goes into x's dict (x.optical): the modalities go all into one dict or all to "
                "parameters of their names"
            ),
        ),
        (
            ["--bands", PER_MODALITY, "--input-shape", "4,64,64"],
            "error: --input-shape 4,64,64: 4 channels, and --bands names 6 over its modalities",
        ),
    ],
)
def test_modalities_that_do_not_fit_the_model_are_one_line(extra, message):
    target = (
        TWO
        if not extra[1].startswith("optical=")
        else f"{MODELS / 'two_inputs.py'}:OpticalDictAndSar"
    )
    done = run_cli("inspect", target, *extra)
    assert done.returncode == 2 and done.stderr.strip() == message, done.stderr


def test_the_backbone_feeds_each_modality_to_its_parameter(tmp_path):
    """Truth: hooks on a plain TwoInputs with the backbone's weights, called by hand with both
    images; the backbone gets them stacked, or as a dict by name."""
    out = tmp_path / "out"
    code, data = run_json(
        "new-backbone", TWO, "--bands", PER_MODALITY, "--out", str(out), "--name", "two_in",
        "--no-verify",
    )  # fmt: skip
    assert code == 0, data
    backbone = generated_backbone(out, "two_in")
    plain = model_class("two_inputs", "TwoInputs")().eval()
    plain.load_state_dict(backbone.model.state_dict())
    truth: list[torch.Tensor] = []
    for stage in (plain.stage1, plain.stage2):
        stage.register_forward_hook(lambda m, i, o: truth.append(o))
    optical, sar = torch.randn(2, 4, 64, 64), torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        plain(optical, sar)
        stacked = backbone(torch.cat([optical, sar], 1))
        by_name = backbone({"x_optical": optical, "x_sar": sar})
    assert [tuple(t.shape) for t in truth] == [(2, 16, 16, 16), (2, 32, 8, 8)]
    for a, b, want in zip(stacked, by_name, truth, strict=True):
        assert torch.equal(a, want) and torch.equal(b, want)
    assert not any(p.requires_grad is False for p in backbone.model.sar.parameters())
    with pytest.raises(ValueError, match="an image of 4 channels for the modalities"):
        backbone(optical)


def test_pretrained_weights_load_whole_for_each_modality(tmp_path):
    """Each input's first layer reads its own modality's bands, whole: the checkpoint loads as
    it is (no layer is chosen by band name, so there is no PRETRAINED_BANDS to check), and the
    backbone's embeddings hold the checkpoint's values."""
    torch.manual_seed(3)
    trained = model_class("modality_dict", "ModalityDictEncoder")().state_dict()
    weights = tmp_path / "trained.pt"
    torch.save(trained, weights)
    out = tmp_path / "out"
    code, data = run_json(
        "new-backbone", DICT, "--bands", "S2L2A=B02,B03,B04,B08;S1GRD=VV_REAL,VH_REAL",
        "--weights", str(weights), "--out", str(out), "--name", "md_w", "--no-verify",
    )  # fmt: skip
    assert code == 0, data
    code, checks = run_json("verify", str(out), "--quick")
    assert code == 0 and checks["ok"] is True, checks
    names = [c["name"] for c in checks["checks"]]
    assert "weights" in names and "band weights" not in names
    backbone = generated_backbone(out, "md_w", pretrained=True)
    for name in ("S2L2A", "S1GRD"):
        assert torch.equal(backbone.model.embed[name].weight, trained[f"embed.{name}.weight"])


def test_a_dict_of_an_unknown_modality_is_refused_by_name(tmp_path):
    from scaffold.runtime.inputs import split_modalities

    mods = (("a", 2), ("b", 1))
    image = torch.randn(1, 3, 8, 8)
    parts = split_modalities(image, mods)
    assert torch.equal(parts["a"], image[:, :2]) and torch.equal(parts["b"], image[:, 2:])
    one = {"b": torch.zeros(1, 1, 8, 8)}
    assert split_modalities(one, mods) is one  # a dataset may hold only some of them
    with pytest.raises(ValueError, match="images of c, which is none of the modalities a, b"):
        split_modalities({"a": image[:, :2], "c": image[:, 2:]}, mods)


def test_a_forward_of_no_named_parameters_asks_where_the_modalities_go():
    target = f"{MODELS / 'two_inputs.py'}:Passthrough"
    done = run_cli("inspect", target, "--bands", PER_MODALITY)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: Passthrough.forward takes no named parameters: pass --image-arg with the place "
        "of x_optical (NAME, or PARAM.x_optical in a dict)"
    )
    code, data = run_json("inspect", target, "--bands", PER_MODALITY, "--image-arg", "x_optical")
    assert code == 0 and data["doubts"] == [] and data["frozen"] == []


def test_a_siamese_net_whose_in_chans_counts_one_date_keeps_its_value(tmp_path):
    """`in_chans=3` per date of a 6-channel input counts something else than the input's
    channels: the backbone builds the model with the person's 3, never the input's 6, and its
    features are the per-stage |a - b| the decoder reads (truth: by hand on a plain model)."""
    target = f"{MODELS / 'siamese.py'}:SiameseChange"
    args = ("--arg", "in_chans=3", "--input-shape", "6,64,64")
    code, spec = run_json("inspect", target, *args)
    assert code == 0 and spec["in_chans_arg"] is None and spec["doubts"] == []
    out = tmp_path / "out"
    code, data = run_json(
        "new-backbone", target, *args, "--out", str(out), "--name", "siam", "--no-verify"
    )
    assert code == 0, data
    backbone = generated_backbone(out, "siam")
    plain = model_class("siamese", "SiameseChange")(in_chans=3).eval()
    plain.load_state_dict(backbone.model.state_dict(), strict=False)
    x = torch.randn(2, 6, 64, 64)
    with torch.no_grad():
        features = backbone(x)
        a, b, truth = x[:, :3], x[:, 3:], []
        for stage in plain.stages:
            a, b = stage(a), stage(b)
            truth.append(torch.abs(a - b))
    assert [tuple(f.shape) for f in features] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    for got, want in zip(features, truth, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_two_inputs_may_read_the_same_bands_one_input_reads_each_once(tmp_path):
    same = "x_optical=BLUE,GREEN,RED,NIR_BROAD;x_sar=RED,NIR_BROAD"  # two dates share bands
    done = run_cli(
        "new-backbone", TWO, "--bands", same, "--out", str(tmp_path / "a"), "--no-verify"
    )
    assert done.returncode == 0, done.stderr
    twice = "x_optical=BLUE,GREEN,RED,BLUE;x_sar=VV_REAL,VH_REAL"
    done = run_cli(
        "new-backbone", TWO, "--bands", twice, "--out", str(tmp_path / "b"), "--no-verify"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: --bands: 'BLUE' is BLUE, given twice"
