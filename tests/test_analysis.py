"""The traced analysis: exact channels, reductions and layouts for every layout and output kind."""

from pathlib import Path

import pytest
import torchvision

from scaffold.errors import ScaffoldError
from scaffold.pipeline import analyse

from .conftest import MODELS, SWIN3D

TV = Path(torchvision.__file__).parent / "models"


def table(spec):
    return [(f.module, f.num_chs, f.reduction, f.layout) for f in spec.features]


def test_cnn_whose_stages_are_visible_only_inside():
    spec = analyse(str(MODELS / "cnn.py"))
    assert spec.input_shape == (1, 4, 64, 64)  # in_chans=4 from the constructor's default
    assert spec.in_chans_arg == "in_chans"
    assert spec.constructor == (
        {"name": "in_chans", "default": "4", "annotation": "int"},
        {"name": "width", "default": "8", "annotation": "int"},
    )
    assert table(spec) == [
        ("stem", 8, 2, "NCHW"),
        ("stage1", 16, 4, "NCHW"),
        ("stage2", 32, 8, "NCHW"),
    ]  # not the avgpool, not a layer inside a block
    assert spec.out_indices == (0, 1, 2)
    assert spec.traced_on == "cpu" and spec.output_kind == "tensor"  # small: real tensors


def test_vit_with_class_token_on_a_non_square_grid():
    spec = analyse(str(MODELS / "vit.py"))
    assert spec.input_shape == (1, 3, 32, 48)  # from img_size=(32, 48)
    assert table(spec) == [(f"blocks.{i}", 32, 8, "NLC") for i in range(6)]
    assert {(f.prefix_tokens, f.grid) for f in spec.features} == {(1, (4, 6))}
    assert spec.out_indices == (1, 2, 3, 5)  # four, evenly spaced, ending at the last block


def test_channels_last_pyramid():
    spec = analyse(str(MODELS / "channels_last.py"))
    assert table(spec) == [
        ("stages.0", 12, 4, "NHWC"),
        ("stages.1", 24, 8, "NHWC"),
        ("stages.2", 48, 16, "NHWC"),
    ]
    assert spec.in_chans == 5


def test_temporal_3d_encoder():
    spec = analyse(str(MODELS / "temporal.py"))
    assert spec.input_shape == (1, 3, 6, 64, 64)  # num_frames=6, a Conv3d stem
    assert table(spec) == [
        ("stem", 8, 2, "NCTHW"),
        ("layer1", 16, 4, "NCTHW"),
        ("layer2", 32, 8, "NCTHW"),
    ]
    assert [f.num_frames for f in spec.features] == [6, 3, 3]
    assert spec.first_conv == "stem.0" and spec.first_conv_3d


def test_swin3d_example_taps_the_last_block_of_each_stage():
    spec = analyse(str(SWIN3D))
    assert spec.input_shape == (1, 6, 4, 64, 64)
    assert table(spec) == [
        ("layers.0.blocks.1", 48, 4, "NTHWC"),  # before the patch merging that ends the stage
        ("layers.1.blocks.1", 96, 8, "NTHWC"),
        ("layers.2.blocks.1", 192, 16, "NTHWC"),
        ("norm", 384, 32, "NTHWC"),
    ]
    assert [f.num_frames for f in spec.features] == [2, 2, 2, 2]


def test_tokens_without_a_class_token():
    spec = analyse(str(MODELS / "tokens.py"))
    assert table(spec) == [("stage1", 16, 4, "NLC"), ("stage2", 32, 8, "NLC")]
    assert [(f.prefix_tokens, f.grid) for f in spec.features] == [(0, (16, 16)), (0, (8, 8))]


def test_dict_output_is_taken_at_its_word():
    spec = analyse(str(MODELS / "dict_out.py"))
    assert spec.output_kind == "dict"
    assert [(f.source, f.key, f.num_chs, f.reduction) for f in spec.features] == [
        ("output", "res2", 16, 2),
        ("output", "res4", 24, 4),
        ("output", "res8", 40, 8),  # the pooled vector is not a feature map
    ]
    assert spec.features[0].module == "c1"  # the module that produced the tensor, when one did


def test_list_output_sorted_fine_to_coarse():
    spec = analyse(str(MODELS / "list_out.py"))
    assert [(f.key, f.num_chs, f.reduction) for f in spec.features] == [(1, 8, 2), (0, 16, 4)]


def test_module_called_several_times():
    spec = analyse(str(MODELS / "shared_act.py"))
    assert [(f.module, f.call, f.num_chs, f.reduction) for f in spec.features] == [
        ("act", 0, 8, 2),
        ("act", 1, 16, 4),
        ("act", 2, 32, 8),
    ]


def test_torchvision_resnet18_builder():
    spec = analyse(f"{TV / 'resnet.py'}:resnet18")
    assert spec.kind == "function"
    assert table(spec) == [
        ("relu", 64, 2, "NCHW"),
        ("layer1", 64, 4, "NCHW"),
        ("layer2", 128, 8, "NCHW"),
        ("layer3", 256, 16, "NCHW"),
        ("layer4", 512, 32, "NCHW"),
    ]
    assert spec.out_indices == (1, 2, 3, 4)
    assert spec.num_params == 11_689_512


def test_a_head_conv_with_its_norm_and_activation_as_modules_of_their_own_is_head():
    # MNASNet's `layers` ends in a 1x1 conv that widens 160 -> 1280, a BatchNorm and a ReLU (each
    # a module of its own) after the last stack; a mean over H, W (a function) and the classifier
    # follow. The last level is what enters that conv: the last stack's 160 channels.
    spec = analyse(f"{TV / 'mnasnet.py'}:mnasnet0_5", input_shape=(3, 224, 224))
    assert [(f.module, f.num_chs, f.reduction) for f in spec.features] == [
        ("layers.7", 8, 2),
        ("layers.8", 16, 4),
        ("layers.9", 24, 8),
        ("layers.11", 48, 16),
        ("layers.13", 160, 32),
    ]
    assert "layers.14" in " ".join(spec.notes)  # said to be left out as the head


DEEP = [
    ("stem", 24, 2),
    ("down.0", 24, 4),
    ("down.1", 48, 8),
    ("down.2", 96, 16),
    ("down.3", 192, 32),
    ("down.4", 384, 64),
]


@pytest.mark.parametrize(
    ("model", "size"), [("DeepCNN", 64), ("DeepCNN", 128), ("FlatDeepCNN", 64)]
)
def test_a_strided_conv_that_reaches_one_cell_is_a_level_not_the_head(model, size):
    # At 64x64 the fifth stage's stride-2 conv turns 2x2 into 1x1, which looks like a global
    # pool; at twice the size it gives 2x2 (4x4 at 256): a level, the last feature at either
    # size. FlatDeepCNN's head flattens that cell into a fixed Linear, so the whole model runs at
    # 64x64 only: the stages recorded before its head raises at the larger size decide.
    spec = analyse(f"{MODELS / 'deep_cnn.py'}:{model}", input_shape=(3, size, size))
    assert [(f.module, f.num_chs, f.reduction) for f in spec.features] == DEEP
    assert spec.features[-1].grid == (size // 64, size // 64)
    assert spec.out_indices == (2, 3, 4, 5)  # the last four, ending at 384 channels
    assert spec.head_modules == ("head",)
    assert "left out as the head: head" in spec.notes
    assert not any("down.4" in note for note in spec.notes)


@pytest.mark.parametrize("size", [64, 128])
def test_a_global_pool_after_a_one_cell_stage_is_still_the_head(size):
    spec = analyse(f"{MODELS / 'deep_cnn.py'}:PooledDeepCNN", input_shape=(3, size, size))
    assert [(f.module, f.num_chs, f.reduction) for f in spec.features] == DEEP
    assert spec.head_modules == ("pool", "flatten", "head")
    assert "left out as the head: pool, flatten, head" in spec.notes


def test_a_conv_whose_kernel_covers_the_map_is_the_head():
    # timm's VGG classifier starts with a 7x7 conv on the 7x7 map (one cell at 224x224); at
    # 448x448 it gives 8x8, which is not the grid of the same reduction: not a level, the head.
    spec = analyse("timm.models.vgg:vgg11", input_shape=(3, 224, 224))
    assert [(f.num_chs, f.reduction) for f in spec.features][-2:] == [(512, 16), (512, 32)]
    assert spec.head_modules == ("pre_logits", "head")


def test_a_global_pool_that_reaches_one_cell_is_the_head_at_both_sizes():
    # cnn.py's AdaptiveAvgPool2d(1) gives one cell at every size: the head, and nothing at a
    # second size makes it a level.
    for size in (64, 128):
        spec = analyse(str(MODELS / "cnn.py"), input_shape=(4, size, size))
        assert [f.module for f in spec.features] == ["stem", "stage1", "stage2"]
        assert spec.head_modules == ("pool", "head")


def test_a_neck_that_reads_every_level_is_not_a_side_branch_of_the_encoder():
    # The neck reads r4 (stage1's output) after the encoder and then works at r8 and r16: that
    # is not the encoder leaving r4 through a branch, so stage2 and stage3 stay levels.
    spec = analyse(str(MODELS / "fpn_neck.py"))
    assert [(f.module, f.num_chs, f.reduction) for f in spec.features] == [
        ("stem", 8, 2),
        ("stage1", 16, 4),
        ("stage2", 32, 8),
        ("stage3", 64, 16),
    ]


def test_torchvision_swin_t_channels_last():
    spec = analyse(f"{TV / 'swin_transformer.py'}:swin_t")
    assert table(spec)[:3] == [
        ("features.1", 96, 4, "NHWC"),
        ("features.3", 192, 8, "NHWC"),
        ("features.5", 384, 16, "NHWC"),
    ]
    assert table(spec)[3][1:3] == (768, 32)


def test_torchvision_vit_b_16_tokens_with_class_token():
    spec = analyse(f"{TV / 'vision_transformer.py'}:vit_b_16")
    assert spec.input_shape == (1, 3, 224, 224)  # image_size=224 on the built model
    assert spec.traced_on == "meta"  # 86M parameters: shapes only, no weights allocated
    assert table(spec) == [(f"encoder.layers.encoder_layer_{i}", 768, 16, "NLC") for i in range(12)]
    assert {(f.prefix_tokens, f.grid) for f in spec.features} == {(1, (14, 14))}
    assert spec.out_indices == (2, 5, 8, 11)


def test_input_shape_override_reaches_the_constructor():
    spec = analyse(str(MODELS / "cnn.py"), {}, (6, 32, 32))
    assert spec.args == {"in_chans": 6}
    assert spec.input_shape == (1, 6, 32, 32)
    assert [f.grid for f in spec.features] == [(16, 16), (8, 8), (4, 4)]


def test_args_change_the_model():
    spec = analyse(str(MODELS / "cnn.py"), {"width": 4})
    assert [f.num_chs for f in spec.features] == [4, 8, 16]


def test_spec_round_trips_through_json():
    from scaffold.spec import BackboneSpec

    spec = analyse(str(MODELS / "dict_out.py"))
    assert BackboneSpec.from_json(spec.to_json()) == spec


def test_blocks_returning_aux_and_tokens_are_tapped_at_the_tokens():
    """Each block returns (aux, tokens); the last block drops the aux map, the tokens go on to
    the norm: the taps are item 1 of the four blocks, and the spec keeps that key."""
    from scaffold.spec import BackboneSpec

    spec = analyse(str(MODELS / "tuple_blocks.py"))
    found = [(f.module, f.source, f.key, f.num_chs, f.reduction, f.layout) for f in spec.features]
    assert found == [(f"blocks.{i}", "hook", 1, 32, 4, "NLC") for i in range(4)]
    assert BackboneSpec.from_json(spec.to_json()) == spec
    old = spec.to_dict()
    for feature in old["features"]:
        del feature["key"]  # a spec written before hooks had keys
    assert all(f.key is None for f in BackboneSpec.from_dict(old).features)


BAD = """
import torch
from torch import nn


class NeedsArgs(nn.Module):
    def __init__(self, depth, width, in_chans=3):
        super().__init__()
        self.c = nn.Conv2d(in_chans, width, 3)


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, 2, 1)

    def forward(self, x):
        raise ValueError("expected 13 bands, got " + str(x.shape[1]))


class NoTensor(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, 2, 1)

    def forward(self, x):
        return {"loss": 1.0}


class Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
"""


@pytest.fixture()
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad_models.py"
    path.write_text(BAD)
    return path


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("NeedsArgs", {}, r"NeedsArgs\(\) needs arguments that were not given: depth, width"),
        ("NeedsArgs", {"depth": 1, "width": 2, "colour": 1}, r"has no parameter colour"),
        ("Raises", {}, r"Raises: forward raised .*ValueError: expected 13 bands, got 3"),
        ("NoTensor", {}, r"NoTensor: forward returned dict with no tensor in it"),
        ("Pooled", {}, r"Pooled: no output of any submodule is a feature map"),
    ],
)
def test_bad_models(bad_file: Path, name, args, message):
    with pytest.raises(ScaffoldError, match=message):
        analyse(f"{bad_file}:{name}", args)


def test_file_without_a_module(tmp_path: Path):
    path = tmp_path / "plain.py"
    path.write_text("def f():\n    return 1\n")
    with pytest.raises(ScaffoldError, match=r"plain\.py: defines no torch\.nn\.Module subclass"):
        analyse(str(path))


def test_tuple_output_with_a_logits_item(tmp_path: Path):
    path = tmp_path / "tuple_net.py"
    path.write_text(
        "import torch\nfrom torch import nn\n\n\nclass TupleNet(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.a = nn.Conv2d(3, 8, 3, 2, 1)\n        self.b = nn.Conv2d(8, 12, 3, 2, 1)\n"
        "        self.fc = nn.Linear(12, 5)\n\n"
        "    def forward(self, x):\n        a = self.a(x)\n        b = self.b(a)\n"
        "        return a.permute(0, 2, 3, 1), b, self.fc(b.mean((2, 3)))\n"
    )
    spec = analyse(str(path))
    assert spec.output_kind == "tuple"
    assert [(f.key, f.num_chs, f.reduction, f.layout) for f in spec.features] == [
        (0, 8, 2, "NHWC"),
        (1, 12, 4, "NCHW"),
    ]
    assert [f.module for f in spec.features] == ["output[0]", "b"]


SEPARABLE_BLOCKS = """
import torch
from torch import nn


class SepConv(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, 1, 1, groups=c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.pw(torch.relu(self.dw(x)))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.stack = nn.Sequential(SepConv(c), SepConv(c), SepConv(c))

    def forward(self, x):
        return x + self.stack(x)


class SepNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 4, 1)
        self.blocks = nn.Sequential(
            Block(8), Block(8), Block(8), nn.Conv2d(8, 16, 3, 2, 1), Block(16), Block(16),
            nn.Conv2d(16, 32, 3, 2, 1), Block(32), Block(32),
        )
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))
"""


def test_blocks_of_separable_convs_are_one_tap_per_level(tmp_path: Path):
    """A block that chains separable convs (each only single layers) is a block, not a stage:
    several such blocks at one level give one tap, as Xception's middle flow."""
    path = tmp_path / "sep_net.py"
    path.write_text(SEPARABLE_BLOCKS)
    spec = analyse(str(path), {}, (3, 64, 64))
    assert table(spec) == [
        ("blocks.2", 8, 4, "NCHW"),
        ("blocks.5", 16, 8, "NCHW"),
        ("blocks.8", 32, 16, "NCHW"),
    ]
