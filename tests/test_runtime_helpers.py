"""scaffold's runtime (scaffold/runtime), tested directly: the layouts, the forward's call, the
checkpoint filter; that it imports nothing else of scaffold; that a generated package carries it
verbatim. The analysis uses the same functions (it imports them), so no copy has to agree."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from scaffold.analyse.call import RandomDraws
from scaffold.analyse.trace import _output_items
from scaffold.render.backbone import RUNTIME_DIR, runtime_sources
from scaffold.runtime import RUNTIME_VERSION
from scaffold.runtime.checkpoint import checkpoint_filter, select_band_weights
from scaffold.runtime.inputs import (
    FixedNoise,
    as_form,
    first_tensor,
    forward_inputs,
    item_at,
    resample_frames,
)
from scaffold.runtime.layouts import frame_grid, to_image, token_grid

RUNTIME = Path(__file__).parents[1] / "scaffold" / "runtime"

NESTED = [
    torch.zeros(1),
    {"a": [torch.ones(2), {"b": torch.full((3,), 2.0)}], "c": torch.full((4,), 3.0)},
    (None, "text", [torch.full((5,), 4.0)]),
    [{"x": 1}, {"y": [torch.full((6,), 5.0), torch.full((7,), 6.0)]}],
]


@pytest.mark.parametrize("output", NESTED)
def test_every_key_path_the_analysis_records_reaches_its_tensor(output):
    kind, items = _output_items(output)
    assert items or kind == "tensor"
    for key, tensor in items:
        assert item_at(output, key) is tensor
    assert item_at(output, None) is first_tensor(output)


def test_forward_inputs_place_the_image_and_each_argument_in_its_form():
    x = torch.zeros(2, 4, 8, 8)
    args, kwargs = forward_inputs(
        x, "x_dict.imgs", True, {"x_dict.chn_ids": [0, 3, 5, 7], "scale": 2.0},
        {"x_dict.chn_ids": "batched"},
    )  # fmt: skip
    (image_dict,) = args
    assert image_dict["imgs"] is x and kwargs == {"scale": 2.0}
    assert image_dict["chn_ids"].tolist() == [[0, 3, 5, 7]] * 2
    assert as_form([1, 2], "tensor", x).tolist() == [1, 2]
    assert as_form([1, 2], "value", x) == [1, 2]
    args, kwargs = forward_inputs(x, "pixels", False, {}, {})
    assert args == [] and kwargs["pixels"] is x


def test_per_frame_values_are_resampled_first_and_last_kept():
    assert resample_frames([10, 20, 30], 3) == [10, 20, 30]
    assert resample_frames([0, 100], 5) == [0, 25, 50, 75, 100]
    assert resample_frames([1.0, 2.0], 3) == [1.0, 1.5, 2.0]
    assert resample_frames([7], 3) == [7, 7, 7]


def test_fixed_noise_ramps_the_draws_as_the_analysis_fixes_them():
    def draws() -> list[torch.Tensor]:
        filled = torch.empty(2, 3)
        filled.uniform_()
        return [torch.rand(2, 5), torch.randn_like(torch.zeros(4)), torch.randperm(6), filled]

    with FixedNoise():
        ours = draws()
    with RandomDraws(fixed=True):
        analysed = draws()
    for a, b in zip(ours, analysed, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(ours[2], torch.arange(6))  # a permutation that keeps the order
    assert bool((ours[0].diff(dim=-1) > 0).all())


def test_a_token_count_that_is_no_frames_of_the_grid_is_refused_by_name():
    assert frame_grid(2 * 4 * 6, 32, 48, 8) == (2, 4, 6)
    assert frame_grid(3 * 8 * 12, 32, 48, 8, frames=3) == (3, 8, 12)  # a larger input
    with pytest.raises(ValueError, match="47 tokens are not frames of the token grid of a 32x48"):
        frame_grid(47, 32, 48, 8)


def test_token_grids():
    assert token_grid(24, 32, 48, 8) == (4, 6)
    assert token_grid(25, 33, 33, 8) == (5, 5)  # ceil: a padded patch embedding
    assert token_grid(6, 40, 60, 8, any_size=True) == (2, 3)  # nearest the aspect ratio
    with pytest.raises(ValueError, match="7 tokens do not fit a 32x48 input"):
        token_grid(7, 32, 48, 8)


def test_tokens_with_a_class_token_and_groups_become_maps_group_after_group():
    b, c, h, w = 2, 3, 2, 3
    grid = torch.arange(b * 2 * h * w * c, dtype=torch.float32).reshape(b, 2 * h * w, c)
    tokens = torch.cat([torch.full((b, 1, c), -1.0), grid], dim=1)  # a class token first
    f = {"layout": "NLC", "reduction": 4, "prefix_tokens": 1, "groups": 2}
    image = to_image(tokens, f, (8, 12), (8, 12))
    assert image.shape == (b, 2 * c, h, w)
    # group 0's channels first; token (row 1, col 2) of group 1 is grid token 6 + 5
    assert torch.equal(image[:, c:, 1, 2], grid[:, 6 + 5])
    assert torch.equal(image[:, :c, 0, 1], grid[:, 1])
    mean = to_image(tokens, f, (8, 12), (8, 12), group_reduction="mean")
    assert torch.equal(mean, (image[:, :c] + image[:, c:]) / 2)


def test_frames_of_tokens_stacked_frame_by_frame():
    b, t, h, w, c = 1, 2, 2, 2, 3
    tokens = torch.randn(b, t * h * w, c)
    f = {"layout": "NTLC", "reduction": 4, "num_frames": t}
    stacked = to_image(tokens, f, (8, 8), (8, 8), temporal_reduction="stack")
    assert stacked.shape == (b, t * c, h, w)
    frames = tokens.reshape(b, t, h, w, c)
    assert torch.equal(stacked[:, c:], frames[:, 1].permute(0, 3, 1, 2))  # frame 1 second
    last = to_image(tokens, f, (8, 8), (8, 8), temporal_reduction="last")
    assert torch.equal(last, frames[:, 1].permute(0, 3, 1, 2))


class Tiny(nn.Module):
    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.conv = nn.Conv2d(in_chans, 2, 1)
        self.model.head = nn.Linear(2, 5)
        self.bands = ("RED", "NIR", "SWIR")
        self.removed_modules = ()


def test_the_checkpoint_filter_strips_wrappers_drops_heads_and_picks_bands_by_name():
    torch.manual_seed(0)
    model = Tiny()
    conv = torch.randn(2, 4, 1, 1)  # trained on BLUE, RED, GREEN, NIR
    checkpoint = {
        "state_dict": {
            "module.conv.weight": conv,
            "module.conv.bias": torch.ones(2),
            "module.head.weight": torch.zeros(5, 2),
            "module.head.bias": torch.zeros(5),
        }
    }
    out = checkpoint_filter(checkpoint, model, "model.conv", None, ("BLUE", "RED", "GREEN", "NIR"))
    assert set(out) == {
        "model.conv.weight",
        "model.conv.bias",
        "model.head.weight",
        "model.head.bias",
    }
    assert torch.equal(out["model.conv.bias"], torch.ones(2))
    assert torch.equal(out["model.head.weight"], model.model.head.weight)  # its own head kept
    weight = out["model.conv.weight"]
    assert torch.equal(weight[:, 0], conv[:, 1]) and torch.equal(weight[:, 1], conv[:, 3])
    assert torch.equal(weight[:, 2], model.model.conv.weight[:, 2])  # SWIR: new
    assert model.band_weights == {"loaded": ["RED", "NIR"], "new": ["SWIR"]}
    with pytest.raises(ValueError, match="reads 4 input channels, PRETRAINED_BANDS names 2"):
        select_band_weights(conv, conv, ["RED"], ("RED", "NIR"))


def test_the_runtime_imports_nothing_of_scaffold():
    allowed = {"torch", "timm", "__future__"} | set(sys.stdlib_module_names)
    for path in RUNTIME.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in allowed, (path.name, node.module)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in allowed, (path.name, alias.name)


def test_each_runtime_file_says_its_version_and_that_update_replaces_it():
    for name, content in runtime_sources().items():
        first = content.decode().splitlines()[0]
        assert (
            first
            == f"# scaffold runtime {RUNTIME_VERSION}: owned by scaffold, copied verbatim into each generated package."
        ), name


def test_a_generated_package_carries_the_runtime_verbatim_and_ruff_clean(generated):
    package = generated["cnn"].package
    copied = {p.name: p.read_bytes() for p in (package / RUNTIME_DIR).glob("*.py")}
    assert copied == runtime_sources()
    for cmd in (["check", "--isolated"], ["format", "--isolated", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *cmd, str(package)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_two_unrelated_models_differ_only_in_their_constants(generated):
    import difflib

    a = (generated["cnn"].package / "backbone.py").read_text().splitlines()
    b = (generated["temporal"].package / "backbone.py").read_text().splitlines()
    changed = [
        line[1:]
        for line in difflib.unified_diff(a, b, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    constants = ("MODEL_", "IN_CHANS", "INPUT_SIZE", "NUM_FRAMES", "INPUT_LAYOUT", "OUT_INDICES")
    for line in changed:
        model_specific = (
            line.startswith(constants)
            or line.startswith(
                ("    {", "     ", "# Model:", "# The features measured", '"""', "class ")
            )
            or "Backbone" in line
            or "model_name" in line
        )
        assert model_specific, line
    assert len(a) < 90 and len(b) < 90
