"""The taps on timm's own models agree with the feature_info timm's authors declared by hand.

Each model is analysed from its timm builder function, as `scaffold inspect
timm.models.<module>:<builder> --input-shape ...` does, and its measured (module, channels,
reduction) list is held against the literal list and against timm's `feature_info`.
"""

import pytest
import timm
import torch

from scaffold.grid import classify, match_grid
from scaffold.pipeline import analyse

CASES = {
    # the head's channel expansion (conv_head, 1280) is head, not the last level
    "efficientnet:efficientnet_b0": (
        (3, 224, 224),
        [
            ("blocks.0", 16, 2),
            ("blocks.1", 24, 4),
            ("blocks.2", 40, 8),
            ("blocks.4", 112, 16),
            ("blocks.6", 320, 32),
        ],
    ),
    # the conv after the global pool (1024 on a 1x1 map) is head, not a level at 224
    "mobilenetv3:mobilenetv3_small_100": (
        (3, 224, 224),
        [
            ("bn1", 16, 2),
            ("blocks.0", 16, 4),
            ("blocks.1", 24, 8),
            ("blocks.3", 48, 16),
            ("blocks.5", 576, 32),
        ],
    ),
    # what enters a transition (the dense block), not the transition's halving conv
    "densenet:densenet121": (
        (3, 224, 224),
        [
            ("features.norm0", 64, 2),
            ("features.denseblock1", 256, 4),
            ("features.denseblock2", 512, 8),
            ("features.denseblock3", 1024, 16),
            ("features.norm5", 1024, 32),
        ],
    ),
    # what enters the next block, not its expansion conv; the last ConvNormAct is head
    "rexnet:rexnet_100": (
        (3, 224, 224),
        [
            ("features.0", 16, 2),
            ("features.2", 38, 4),
            ("features.4", 61, 8),
            ("features.10", 128, 16),
            ("features.15", 185, 32),
        ],
    ),
    # 299 pixels through unpadded layers: 149, 73, 35, 17, 8 are reductions 2 to 32
    "inception_v3:inception_v3": (
        (3, 299, 299),
        [
            ("Conv2d_2b_3x3", 64, 2),
            ("Conv2d_4a_3x3", 192, 4),
            ("Mixed_5d", 288, 8),
            ("Mixed_6e", 768, 16),
            ("Mixed_7c", 2048, 32),
        ],
    ),
    # the first block of a level projects inside; the tap is what enters it
    "dpn:dpn68": (
        (3, 224, 224),
        [
            ("features.conv1_1", 10, 2),
            ("features.conv2_3", 144, 4),
            ("features.conv3_4", 320, 8),
            ("features.conv4_12", 704, 16),
            ("features.conv5_bn_ac", 832, 32),  # timm: conv5_3, the same tensor's shape
        ],
    ),
    # blocks called with rotary embeddings as a keyword argument: still every block
    "eva:eva02_tiny_patch14_224": (
        (3, 224, 224),
        [(f"blocks.{i}", 192, 14) for i in range(12)],
    ),
}


# Blocks that return several maps: the taps are the item that continues (key), as timm lists them.
# Small configurations of timm's classes (timm's feature_info is written from the same arguments).
ITEM_CASES = {
    # each block returns (pixel_embed, patch_embed): the patch tokens (item 1) go on to the norm
    "tnt:TNT": (
        {"img_size": 64, "embed_dim": 48, "inner_dim": 12, "depth": 3},
        (3, 64, 64),
        [(f"blocks.{i}", 1, 48, 16) for i in range(3)],
    ),
    # two branches side by side, each block returns [branch 0, branch 1]: each branch's taps are
    # its blocks, sorted by reduction (branch 1 is a 240-pixel input resized to 224 in patches
    # of 16: 14x14 tokens and a class token, reduction 17)
    "crossvit:CrossVit": (
        {
            "img_size": 240,
            "img_scale": (1.0, 224 / 240),
            "patch_size": [12, 16],
            "embed_dim": [24, 48],
            "depth": [[1, 2, 0], [1, 2, 0]],
            "num_heads": [2, 2],
            "mlp_ratio": [2, 2, 1],
        },
        (3, 240, 240),
        [("blocks.0", None, 24, 12), ("blocks.1", None, 24, 12)]
        + [("blocks.0", 1, 48, 17), ("blocks.1", 1, 48, 17)],
    ),
}


@pytest.mark.parametrize("target", list(ITEM_CASES))
def test_taps_on_the_item_that_continues(target: str):
    args, shape, expected = ITEM_CASES[target]
    spec = analyse(f"timm.models.{target}", dict(args), shape)
    assert [(f.module, f.key, f.num_chs, f.reduction) for f in spec.features] == expected
    module, name = target.split(":")
    with torch.device("meta"):
        model = getattr(getattr(timm.models, module), name)(**args)
    assert [(m, c, r) for m, _, c, r in expected] == [
        (f["module"], f["num_chs"], f["reduction"]) for f in model.feature_info
    ]


def _timm_features(builder: str) -> list[tuple[int, int]]:
    with torch.device("meta"):
        model = timm.create_model(builder)
    return [(f["num_chs"], f["reduction"]) for f in model.feature_info]


@pytest.mark.parametrize("target", list(CASES))
def test_taps_agree_with_timm_feature_info(target: str):
    shape, expected = CASES[target]
    spec = analyse(f"timm.models.{target}", {}, shape)
    assert [(f.module, f.num_chs, f.reduction) for f in spec.features] == expected
    assert [(c, r) for _, c, r in expected] == _timm_features(target.split(":")[1])
    assert all(f.why for f in spec.features)  # each tap says why it was chosen


def test_inspect_explains_what_was_left_out():
    spec = analyse("timm.models.efficientnet:efficientnet_b0", {}, (3, 224, 224))
    assert spec.features[-1].why == (
        "what enters conv_head, a layer that widens the channels for the head only"
    )
    assert spec.features[1].why == "what enters blocks.2, the first module at reduction 8"
    assert "left out as the head: conv_head, bn2, global_pool, classifier" in spec.notes
    inner = next(n for n in spec.notes if n.startswith("left out as layers inside"))
    assert "blocks.1.0.conv_pw" in inner  # the expansion conv before the stride


@pytest.mark.parametrize(
    ("size", "grids", "reductions"),
    [
        (299, [149, 73, 35, 17, 8], [2, 4, 8, 16, 32]),  # valid padding loses a few cells
        (106, [53, 27, 14, 7, 4], [2, 4, 8, 16, 32]),  # ceil grids of padded strides
        (224, [112, 56, 28, 14, 7, 4], [2, 4, 8, 16, 32, 64]),  # 4x4 from 7x7 is 64, not 56
        (224, [16], [14]),  # a patch of 14 pixels
        (240, [20], [12]),  # a patch of 12 pixels
    ],
)
def test_reductions_are_stride_products(size, grids, reductions):
    assert [match_grid(g, g, size, size) for g in grids] == reductions


@pytest.mark.parametrize(
    ("tokens", "size", "reduction", "prefix"),
    [
        (197, 224, 16, 1),  # 14x14 patches of 16 and a class token
        (401, 240, 12, 1),  # 20x20 patches of 12
        (197, 240, 17, 1),  # 240 pixels resized to 224 inside the model: 14x14 is the floor grid
    ],
)
def test_token_grids_after_a_class_token(tokens, size, reduction, prefix):
    place = classify((2, tokens, 8), (2, 3, size, size))
    assert place is not None and (place.reduction, place.prefix_tokens) == (reduction, prefix)


def _timm_feature_shapes(builder: str, shape: tuple[int, ...], **kwargs) -> list[tuple[int, int]]:
    """(channels, reduction) of what timm's own features_only wrapper returns: its hand-written
    feature_info holds the default widths only, whatever the widths the model is built with."""
    model = timm.create_model(builder, features_only=True, **kwargs).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, *shape))
    return [(m.shape[1], match_grid(m.shape[-2], m.shape[-1], *shape[1:])) for m in maps]


def test_cells_that_read_two_inputs():
    """A NASNet cell reads the two cells before it, forward(x, x_prev): the tap at reduction 4
    is the stem cell that flows into the next cell, not a layer inside that cell that works on
    its skip input (at 331 pixels and full widths: 168 channels, not 84)."""
    args = {"num_features": 480, "stem_size": 8}  # 1.4M parameters; timm's default is 4032, 96
    spec = analyse("timm.models.nasnet:NASNetALarge", args, (3, 96, 96))
    assert [(f.module, f.num_chs, f.reduction) for f in spec.features] == [
        ("conv0", 8, 2),
        ("cell_stem_0", 20, 4),
        ("cell_5", 120, 8),
        ("cell_11", 240, 16),
        ("act", 480, 32),
    ]
    timm_maps = _timm_feature_shapes("nasnetalarge", (3, 96, 96), **args)
    assert [(f.num_chs, f.reduction) for f in spec.features] == timm_maps


STAGES_AT_ONE_REDUCTION = {
    # stages.1 downsamples to 14 and stages.2, stages.3 keep it: each stage is a tap
    "sequencer:Sequencer2d": (
        {
            "layers": (2, 2, 2, 2),
            "patch_sizes": (7, 2, 1, 1),
            "embed_dims": (32, 64, 64, 64),
            "hidden_sizes": (8, 16, 16, 16),
        },
        (3, 224, 224),
        [
            ("stages.0", 32, 7),
            ("stages.1", 64, 14),
            ("stages.2", 64, 14),
            ("norm", 64, 14),  # timm: stages.3, whose output the norm keeps the shape of
        ],
    ),
    # three Sequentials of transformer blocks after the downsample, one tap each; the stem's
    # finer map at 2 comes first
    "volo:VOLO": (
        {
            "layers": (2, 2, 2, 2),
            "embed_dims": (32, 64, 64, 64),
            "num_heads": (1, 2, 2, 2),
            "stem_hidden_dim": 16,
            "img_size": 112,
        },
        (3, 112, 112),
        [
            ("patch_embed.conv", 16, 2),
            ("network.0", 32, 8),
            ("network.2", 64, 16),
            ("network.3", 64, 16),
            ("norm", 64, 16),  # timm: network.4, then two class-attention blocks and the norm
        ],
    ),
}


@pytest.mark.parametrize("target", list(STAGES_AT_ONE_REDUCTION))
def test_several_stages_at_one_reduction(target: str):
    """timm lists every stage, even several at one reduction: a stage followed by a sibling
    stage of the same output shape is a tap too (small widths: timm's feature_info follows them)."""
    args, shape, expected = STAGES_AT_ONE_REDUCTION[target]
    spec = analyse(f"timm.models.{target}", args, shape)
    assert [(f.module, f.num_chs, f.reduction) for f in spec.features] == expected
    module, cls = target.split(":")
    with torch.device("meta"):
        model = getattr(getattr(timm.models, module), cls)(**args)
    timm_list = [(f["num_chs"], f["reduction"]) for f in model.feature_info]
    assert [(c, r) for _, c, r in expected][-len(timm_list) :] == timm_list
    assert all(f.why for f in spec.features)
