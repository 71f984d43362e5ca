"""Earth-observation time-series encoders, held to the truth: an encoder that takes time before
channels, a factorised temporal ViT with a day-of-year argument, a ConvLSTM whose cell runs once
per frame; and how such models are read: forward-argument forms searched per argument, a model
file that parses the command line when imported.

Each feature family is compared with hooks on a plain copy of the model with the same weights,
called as the model wants its input (the test swaps the axes itself), at two input sizes and two
frame counts, through the generated backbone built by timm."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from scaffold.errors import ScaffoldError
from scaffold.pipeline import analyse
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.spec import BackboneSpec

from .conftest import MODELS, run_cli, run_json

FRAMES_FIRST = str(MODELS / "frames_first.py")
FRAME_VIT = str(MODELS / "frame_vit.py")
CONV_LSTM = str(MODELS / "conv_lstm.py")
DATACUBE = str(MODELS / "datacube.py")
ARGV_MODEL = str(MODELS / "argv_model.py")
DOY = [15, 45, 75, 105, 135, 165]


def taps(spec):
    return [(f.module, f.call, f.num_chs, f.reduction, f.layout) for f in spec.features]


def verify_quick(out: Path) -> dict[str, tuple[bool, str]]:
    """`scaffold verify OUT --quick`, run as a person would (in process): it passes."""
    code, data = run_json("verify", str(out), "--quick")
    found = {c["name"]: (c["ok"], c["detail"]) for c in data["checks"]}
    assert code == 0 and data["ok"], found
    return found


def fresh_backbone(name: str, out: Path, **kwargs):
    """The generated backbone, imported afresh from its folder and built by timm."""
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


def plain_copy(backbone):
    """The person's class with the backbone's weights (the backbone may lack the head)."""
    plain = type(backbone.model)()
    done = plain.load_state_dict(backbone.model.state_dict(), strict=False)
    removed = tuple(m.removeprefix("model.") + "." for m in backbone.removed_modules)
    assert all(k.startswith(removed) for k in done.missing_keys), done
    assert not done.unexpected_keys
    return plain.eval()


def hooked(plain, modules: list[str], call, which: str = "all") -> list[torch.Tensor]:
    """What each of `modules` returns while `call(plain)` runs (its first tensor): every call's
    output, or (`which="last"`) its last call's."""
    seen: dict[str, list[torch.Tensor]] = {m: [] for m in modules}

    def keep(name):
        def hook(module, args, out):
            seen[name].append(out[0] if isinstance(out, tuple) else out)

        return hook

    handles = [plain.get_submodule(m).register_forward_hook(keep(m)) for m in modules]
    try:
        with torch.no_grad():
            call(plain)
    finally:
        for h in handles:
            h.remove()
    if which == "last":
        return [seen[m][-1] for m in modules]
    return [t for m in modules for t in seen[m]]


def assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


# -- 5. (B, T, C, H, W) models -------------------------------------------------------------------
def test_time_before_channels_is_measured_and_the_readme_order_is_taken():
    # 4 bands, 5 frames: TerraTorch's order in, the model's time axis measured (C != T, then
    # another T), the spec keeps TerraTorch's (B, C, T, H, W).
    spec = analyse(FRAMES_FIRST, {}, (4, 5, 32, 32))
    assert spec.input_shape == (1, 4, 5, 32, 32) and spec.in_chans == 4
    assert spec.input_layout == "BTCHW"
    assert spec.doubts == ()
    assert taps(spec) == [("temporal", 0, 16, 4, "NCHW"), ("down", 0, 32, 8, "NCHW")]
    assert any("time axis measured" in n for n in spec.notes)
    assert BackboneSpec.from_json(spec.to_json()) == spec
    # Guessed from the constructor, the same.
    guessed = analyse(FRAMES_FIRST)
    assert guessed.input_shape == (1, 4, 5, 64, 64) and guessed.input_layout == "BTCHW"
    # As many bands as frames: the shapes fit either order, another frame count tells.
    square = analyse(FRAMES_FIRST, {}, (4, 4, 32, 32))
    assert square.input_layout == "BTCHW" and square.doubts == ()
    # A model that takes TerraTorch's order keeps it.
    assert analyse(str(MODELS / "temporal.py")).input_layout == "BCTHW"


def test_a_swapped_shape_that_happens_to_run_is_a_doubt():
    # The model is built for 4 bands; (5, 4) runs only because it reads 5 as the frames, and no
    # other frame count runs that way: found by elimination, never taken as measured.
    spec = analyse(FRAMES_FIRST, {"in_chans": 4, "num_frames": 5}, (5, 4, 32, 32))
    assert spec.input_layout == "BCTHW"
    assert [d.kind for d in spec.doubts] == ["time-axis"]
    assert spec.doubts[0].flag == "--input-shape C,T,H,W"
    assert "elimination" in spec.doubts[0].message


def test_a_model_that_takes_either_order_alike_is_a_doubt(tmp_path):
    # It pools bands and frames together: no trace can tell which axis is time.
    model = tmp_path / "pooled.py"
    model.write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Pooled(nn.Module):\n"
        "    def __init__(self) -> None:\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 8, 3, 2, 1)\n\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        "        return self.conv(x.mean(dim=(1, 2))[:, None])\n"
    )
    spec = analyse(str(model), {}, (3, 4, 32, 32))
    assert spec.input_layout == "BCTHW"
    assert [(d.kind, d.flag) for d in spec.doubts] == [("time-axis", "--input-shape C,T,H,W")]
    assert "either order alike" in spec.doubts[0].message


def test_old_spec_without_the_layout_reads_as_terratorchs_order():
    spec = analyse(str(MODELS / "temporal.py"))
    data = spec.to_dict()
    del data["input_layout"]
    assert BackboneSpec.from_dict(data).input_layout == "BCTHW"


def test_frames_first_backbone_equals_the_model_at_two_sizes_and_two_frame_counts(tmp_path):
    result = generate(Options(FRAMES_FIRST, {}, (4, 5, 32, 32), out=tmp_path / "ff"))
    source = (result.package / "backbone.py").read_text()
    assert 'INPUT_LAYOUT: str = "BTCHW"' in source
    backbone = fresh_backbone(result.backbone, result.out)
    plain = plain_copy(backbone)
    for frames, size in ((5, (32, 32)), (8, (48, 40))):
        torch.manual_seed(frames)
        x = torch.rand(3, 4, frames, *size)  # TerraTorch's (B, C, T, H, W)
        want = hooked(plain, ["temporal", "down"], lambda m, x=x: m(x.transpose(1, 2)))
        with torch.no_grad():
            assert_same(backbone(x), want)
    assert verify_quick(result.out)["sizes"][1].endswith("32x32 with 10 frames")


# -- 6. per-frame arguments ----------------------------------------------------------------------
def test_day_of_year_is_per_frame_and_never_counts_the_bands():
    # No channel parameter: the first conv reads 4 bands; the 6 days follow the 6 frames.
    spec = analyse(FRAME_VIT, {}, None, {"doy": DOY})
    assert spec.input_shape == (1, 4, 6, 64, 64) and spec.input_layout == "BTCHW"
    assert spec.forward_call.per_frame == ("doy",) and spec.forward_call.per_band == ()
    assert spec.forward_call.forms == {"doy": "batched"}
    # the (B, T, D) day embedding is a vector per frame, not a map: the taps are the blocks
    assert taps(spec) == [(f"spatial_blocks.{i}", 0, 16, 4, "NLC") for i in range(2)]
    assert spec.doubts == ()


def test_frame_vit_backbone_follows_the_frames_with_its_days(tmp_path):
    result = generate(
        Options(FRAME_VIT, {}, (4, 6, 32, 32), out=tmp_path / "fv", forward_args={"doy": DOY})
    )
    source = (result.package / "backbone.py").read_text()
    assert 'PER_FRAME_ARGS: tuple[str, ...] = ("doy",)' in source
    assert "PER_BAND_ARGS: tuple[str, ...] = ()" in source
    backbone = fresh_backbone(result.backbone, result.out)
    plain = plain_copy(backbone)
    blocks = ["spatial_blocks.0", "spatial_blocks.1"]
    # 6 frames with the given days; 8 frames: the days resampled over the same span
    days8 = torch.linspace(15, 165, 8).round().long()
    for frames, size, days in ((6, (32, 32), torch.tensor(DOY)), (8, (48, 40), days8)):
        torch.manual_seed(frames)
        x = torch.rand(2, 4, frames, *size)
        doy = days.expand(2, -1)
        want = hooked(plain, blocks, lambda m, x=x, doy=doy: m(x.transpose(1, 2), doy))
        with torch.no_grad():
            assert_same(backbone(x), want)
    # the person's own days for 8 frames are used as given
    own = [10, 20, 30, 40, 200, 210, 220, 230]
    mine = fresh_backbone(result.backbone, result.out, forward_args={"doy": own})
    mine.load_state_dict(backbone.state_dict())
    x = torch.rand(2, 4, 8, 32, 32)
    want = hooked(plain, blocks, lambda m: m(x.transpose(1, 2), torch.tensor([own, own])))
    with torch.no_grad():
        assert_same(mine(x), want)
    assert verify_quick(result.out)["sizes"][1].endswith("32x32 with 12 frames")


# -- 7. a module called once per frame -----------------------------------------------------------
def test_conv_lstm_cell_is_tapped_at_its_last_call_counted_from_the_end():
    spec = analyse(CONV_LSTM, {}, (3, 5, 32, 32))
    assert spec.input_layout == "BCTHW"
    assert taps(spec) == [("cell", -1, 8, 2, "NCHW"), ("down", 0, 16, 4, "NCHW")]
    assert "runs once per frame" in spec.features[0].why


def test_conv_lstm_backbone_reads_the_last_frame_at_any_frame_count(tmp_path):
    result = generate(Options(CONV_LSTM, {}, (3, 5, 32, 32), out=tmp_path / "lstm"))
    backbone = fresh_backbone(result.backbone, result.out)
    plain = plain_copy(backbone)
    for frames, size in ((5, (32, 32)), (8, (48, 40))):
        torch.manual_seed(frames)
        x = torch.rand(2, 3, frames, *size)
        want = hooked(plain, ["cell", "down"], lambda m, x=x: m(x), which="last")
        with torch.no_grad():
            assert_same(backbone(x), want)
    assert verify_quick(result.out)["sizes"][1].endswith("32x32 with 10 frames")


# -- 11. forward-argument forms, per argument ----------------------------------------------------
DATACUBE_ARGS = {
    "datacube.time": [0.1, 0.2, 0.3, 0.4],
    "datacube.latlon": [0.5, 0.6, 0.7, 0.8],
    "datacube.gsd": 10.0,
    "datacube.waves": [0.49, 0.56, 0.66, 0.84, 1.6, 2.2],
}
DATACUBE_FORMS = {
    "datacube.time": "batched",
    "datacube.latlon": "batched",
    "datacube.gsd": "value",
    "datacube.waves": "tensor",
}


@pytest.mark.parametrize("order", [list(DATACUBE_ARGS), list(reversed(DATACUBE_ARGS))])
def test_dict_input_forms_are_found_whatever_the_order_of_the_flags(order):
    given = {k: DATACUBE_ARGS[k] for k in order}
    spec = analyse(DATACUBE, {}, (6, 32, 32), given, "datacube.pixels")
    assert spec.forward_call.forms == DATACUBE_FORMS
    assert spec.forward_call.per_band == ("datacube.waves",)
    assert taps(spec) == [(f"blocks.{i}", 0, 16, 4, "NLC") for i in range(3)]


def test_an_argument_no_form_fits_is_named_not_the_input_shape():
    given = {**DATACUBE_ARGS, "datacube.latlon": [0.5, 0.6]}  # two values where 4 are read
    with pytest.raises(ScaffoldError) as caught:
        analyse(DATACUBE, {}, (6, 32, 32), given, "datacube.pixels")
    message = str(caught.value)
    assert "the forward argument datacube.latlon could not be placed in any form" in message
    assert "mat1 and mat2 shapes cannot be multiplied" in message  # its tensor form's error
    assert "--input-shape" not in message


def test_datacube_backbone_equals_the_model(tmp_path):
    result = generate(
        Options(
            DATACUBE,
            {},
            (6, 32, 32),
            out=tmp_path / "cube",
            forward_args=dict(reversed(DATACUBE_ARGS.items())),
            image_arg="datacube.pixels",
        )
    )
    backbone = fresh_backbone(result.backbone, result.out)
    plain = plain_copy(backbone)
    for size in ((32, 32), (48, 40)):
        x = torch.rand(2, 6, *size)
        cube = {
            "pixels": x,
            "time": torch.tensor([DATACUBE_ARGS["datacube.time"]] * 2),
            "latlon": torch.tensor([DATACUBE_ARGS["datacube.latlon"]] * 2),
            "gsd": 10.0,
            "waves": torch.tensor(DATACUBE_ARGS["datacube.waves"]),
        }
        want = hooked(plain, [f"blocks.{i}" for i in range(3)], lambda m, c=cube: m(c))
        with torch.no_grad():
            assert_same(backbone(x), want)
    verify_quick(result.out)


# -- 13. a model file that parses sys.argv when imported -----------------------------------------
def test_a_model_file_that_parses_the_command_line_at_import(tmp_path):
    done = run_cli("inspect", ARGV_MODEL, "--json")
    data = json.loads(done.stdout)  # what it prints at import is not on stdout ...
    assert done.returncode == 0 and data["qualname"] == "ScriptNet", data
    assert "training for 1 epoch(s)" in done.stderr  # ... but on stderr
    assert [f["num_chs"] for f in data["features"]] == [8, 16]  # its own default width

    required = tmp_path / "script_net.py"
    required.write_text(Path(ARGV_MODEL).read_text().replace("default=8)", "required=True)"))
    done = run_cli("inspect", str(required), "--json")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {required}: importing it exited (SystemExit 2)")
    assert "the following arguments are required: --width" in lines[0]


def test_a_generated_backbone_of_a_script_model_builds_under_another_programs_argv(tmp_path):
    result = generate(Options(ARGV_MODEL, {}, (3, 32, 32), out=tmp_path / "script"))
    saved = sys.argv
    sys.argv = ["terratorch", "iterate", "--hpo", "--config", "benchmark.yaml"]
    try:
        backbone = fresh_backbone(result.backbone, result.out)
    finally:
        sys.argv = saved
    assert backbone.feature_info.channels() == [8, 16]


# -- the benchmark, end to end -------------------------------------------------------------------
@pytest.mark.e2e
def test_frames_first_encoder_benchmark_feeds_terratorchs_order_and_the_model_its_own(
    tmp_path, monkeypatch
):
    record = tmp_path / "inputs.txt"
    monkeypatch.setenv("RECORD_INPUTS", str(record))
    out = tmp_path / "ff"
    code, data = run_json(
        "new-backbone", FRAMES_FIRST, "--input-shape", "4,5,32,32", "--out", str(out)
    )
    assert code == 0 and data["verified"] is True, data
    config = yaml.safe_load(Path(data["benchmark_config"]).read_text())
    datamodule = config["tasks"][0]["datamodule"]
    # the benchmark's datamodule: 4 bands x 5 frames, time-major, expanded to (B, C, T, H, W)
    assert datamodule["init_args"]["expand_temporal_dimension"] is True
    monkeypatch.chdir(out)  # the YAML's paths are relative to its folder, as the run reads them
    batch = _first_batch(datamodule)
    assert tuple(batch.shape[1:3]) == (4, 5), batch.shape
    # and what the model received while it trained: (B, T, C, H, W), B the datamodule's batch
    seen = [tuple(map(int, line.split(","))) for line in record.read_text().split()]
    trained = {s[1:] for s in seen if s[0] == 1}
    batch_size = datamodule["init_args"]["batch_size"]
    assert (batch_size, 5, 4, 32, 32) in trained, trained
    assert all(s[1:3] == (5, 4) for s in trained), trained


def _first_batch(datamodule: dict) -> torch.Tensor:
    """The first training batch's image of the benchmark's datamodule, as terratorch builds it."""
    import importlib

    module, _, name = datamodule["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    dm = cls(**datamodule["init_args"])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    if hasattr(dm, "aug"):
        batch = dm.aug(batch)
    return batch["image"]
