"""The `features match model` check: the values the backbone returns are the model's own tensors.

Each adversary row edits a generated backbone.py the way a hand edit could go wrong, in a way the
shape checks cannot see: `features`, `determinism` and `sizes` still pass, and only the comparison
with hooks on a plain copy of the model (carrying the backbone's weights) finds it.
"""

from __future__ import annotations

import shutil

import pytest

from scaffold.pipeline.new_backbone import Options, generate
from scaffold.verify.checks import Context
from scaffold.verify.determinism import check_determinism
from scaffold.verify.ladder import verify_dir
from scaffold.verify.reference import check_reference
from scaffold.verify.sizes import check_sizes
from scaffold.verify.types import CheckFailed
from scaffold.write.state import read_state

from .conftest import MODELS

CHECK = "features match model"
SHAPE_CHECKS = ("features", "determinism", "sizes")


def quick(out) -> dict[str, tuple[bool, str]]:
    """The quick ladder, as `scaffold verify --quick` runs it: (ok, detail) by check."""
    return {c.name: (c.ok, c.detail) for c in verify_dir(out, quick=True).checks}


def checked(out) -> dict[str, tuple[bool, str]]:
    """Only the shape checks and the new one, called as the ladder calls them (cheaper than the
    whole quick ladder, which also builds the task's model and the fit configs)."""
    context = Context.load(out, read_state(out))
    context.check_import()
    found = {}
    for name, check in (
        ("features", context.check_features),
        (CHECK, lambda: check_reference(context)),
        ("determinism", lambda: check_determinism(context)),
        ("sizes", lambda: check_sizes(context)),
    ):
        try:
            found[name] = (True, check())
        except CheckFailed as exc:
            found[name] = (False, str(exc))
    return found


LAYOUTS = "_runtime/layouts.py"  # the runtime copy's layout conversions


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A CNN and a ViT (class token, non-square 32x48 input) generated for this module's edits."""
    root = tmp_path_factory.mktemp("reference")
    return {
        name: generate(Options(str(MODELS / f"{name}.py"), {}, out=root / name))
        for name in ("cnn", "vit")
    }


@pytest.fixture()
def edit(fresh):
    """edit(model, old, new, file): replace `old` in that package's `file` (backbone.py, or a
    file of its runtime copy; every occurrence when `every`, else the first); every file is
    restored after the test."""
    saved = {}

    def write(path, text):
        path.write_text(text)
        shutil.rmtree(path.parent / "__pycache__", ignore_errors=True)  # same size, same second

    def change(model: str, old: str, new: str, every: bool = False, file: str = "backbone.py"):
        path = fresh[model].package / file
        text = path.read_text()
        saved.setdefault(path, text)
        assert old in text, old
        write(path, text.replace(old, new) if every else text.replace(old, new, 1))
        return fresh[model].out

    yield change
    for path, text in saved.items():
        write(path, text)


def failed_only_here(found) -> str:
    """The new check's finding, after asserting that the shape checks all pass."""
    for name in SHAPE_CHECKS:
        assert found[name][0], (name, found[name])
    ok, detail = found[CHECK]
    assert not ok, detail
    return detail


def test_features_multiplied_by_zero(edit):
    out = edit("cnn", "return x.contiguous()", "return x.contiguous() * 0", file=LAYOUTS)
    detail = failed_only_here(checked(out))
    assert detail.startswith("feature 0 (`model.stem`) of prepare_features_for_image_model differs")
    assert "from the model's own tensor at 64x64: max |diff| " in detail
    assert "all zeros" in detail
    assert detail.endswith(
        "; _runtime/layouts.py differs from the file scaffold generated: a hand edit changed this"
    )


def test_height_and_width_swapped(edit):
    # The CNN was analysed at 64x64 and `sizes` runs it at 128x128: square, so every shape fits;
    # the reference compares at 72x64 too, where the swapped maps have the other shape.
    out = edit(
        "cnn", "return x.contiguous()", "return x.transpose(-1, -2).contiguous()", file=LAYOUTS
    )
    found = checked(out)
    assert "at 64x64 and 128x128" in found["sizes"][1]
    detail = failed_only_here(found)
    assert detail.startswith("feature 0 (`model.stem`) of prepare_features_for_image_model")
    assert "H and W swapped" in detail


def test_height_and_width_swapped_only_where_they_differ(edit):
    # Square maps left alone: only the non-square size the reference adds shows the swap, by
    # the shape of the factory's maps.
    out = edit(
        "cnn",
        "return x.contiguous()",
        "return (x if x.shape[-1] == x.shape[-2] else x.transpose(-1, -2)).contiguous()",
        file=LAYOUTS,
    )
    detail = failed_only_here(checked(out))
    assert detail.startswith(
        "feature 0 (`model.stem`) of forward with image_features=True differs from the model's "
        "own tensor at 72x64 (shape (2, 8, 32, 36), not (2, 8, 36, 32)): another shape; "
        "H and W swapped"
    )


def test_first_feature_detached(edit):
    out = edit(
        "cnn",
        "    constants = CONSTANTS\n",
        "    constants = CONSTANTS\n\n"
        "    def forward(self, x):\n"
        "        features = super().forward(x)\n"
        "        features[0] = features[0].detach()\n"
        "        return features\n",
    )
    detail = failed_only_here(checked(out))
    assert detail.startswith(
        "feature 0 (`model.stem`) of the backbone's forward carries no gradient (detached)"
    )


def test_vit_returns_its_last_block_for_every_level(edit):
    for block in range(5):
        out = edit("vit", f'"module": "model.blocks.{block}",', '"module": "model.blocks.5",')
    detail = failed_only_here(checked(out))
    assert detail.startswith(
        "feature 0 (`model.blocks.1`) of the backbone's forward differs from the model's own "
        "tensor at 32x48"
    )
    assert "it is feature 3's tensor (`model.blocks.5`)" in detail
    assert (
        "FEATURES in backbone.py was changed by hand (FEATURES[1] module `model.blocks.5`, "
        in detail
    )
    assert "the analysis recorded `model.blocks.1`" in detail
    assert "if this change is deliberate, record the new taps: `scaffold update " in detail
    assert "--taps blocks.5,blocks.5,blocks.5,blocks.5`" in detail


@pytest.fixture(scope="module")
def near_identity(tmp_path_factory):
    """A ViT whose fresh blocks are near-identities (LayerScale 1e-5), generated unverified."""
    root = tmp_path_factory.mktemp("layerscale")
    return generate(Options(str(MODELS / "layerscale_vit.py"), {}, out=root / "ls"))


@pytest.mark.parametrize(
    ("old", "new", "found"),
    [
        (  # the first feature taken one block later, in FEATURES
            '"module": "model.blocks.0",',
            '"module": "model.blocks.1",',
            (
                "it is feature 1's tensor (`model.blocks.1`); FEATURES in backbone.py was changed "
                "by hand (FEATURES[0] module `model.blocks.1`, the analysis recorded "
                "`model.blocks.0`)"
            ),
        ),
        (  # ... or in an override of forward
            "    constants = CONSTANTS\n",
            (
                "    constants = CONSTANTS\n\n    def forward(self, x):  # type: ignore[override]\n"
                "        f = super().forward(x)\n        return [f[1], *f[1:]]\n"
            ),
            "it is feature 1's tensor (`model.blocks.1`)",
        ),
    ],
)
def test_a_tap_one_near_identity_block_off_is_found(near_identity, tmp_path, old, new, found):
    """Freshly built, neighbouring blocks' tokens agree within the check's tolerance: the check
    spreads the weights first (fixed noise, put back after), so they differ."""
    out = tmp_path / "ls"
    shutil.copytree(near_identity.out, out)
    path = out / near_identity.package.name / "backbone.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    found_here = checked(out)
    assert found_here["features"][0], found_here["features"]
    ok, detail = found_here[CHECK]
    assert not ok and detail.startswith("feature 0 (`model.blocks.0`) of the backbone's forward")
    assert found in detail, detail


def test_tokens_placed_column_major(edit):
    out = edit(
        "vit",
        "x = x.reshape(x.shape[0], groups, h, w, x.shape[2]).permute(0, 1, 4, 2, 3)",
        "x = x.reshape(x.shape[0], groups, w, h, x.shape[2]).permute(0, 1, 4, 3, 2)",
        file=LAYOUTS,
    )
    detail = failed_only_here(checked(out))
    assert detail.startswith("feature 0 (`model.blocks.1`) of prepare_features_for_image_model")
    assert "at 32x48" in detail
    assert "the tokens are placed column-major" in detail


def test_last_patch_token_dropped_instead_of_the_class_token(edit):
    out = edit(
        "vit",
        'return x[:, f.get("prefix_tokens", 0) : x.shape[1] - f.get("suffix_tokens", 0)]',
        'return x[:, : x.shape[1] - f.get("prefix_tokens", 0) - f.get("suffix_tokens", 0)]',
        file=LAYOUTS,
    )
    detail = failed_only_here(checked(out))
    assert detail.startswith("feature 0 (`model.blocks.1`) of prepare_features_for_image_model")
    assert (
        "the last 1 patch token(s) are dropped instead of the 1 class/register token(s)" in detail
    )


def test_a_model_that_runs_at_one_size_is_compared_there_and_said_so(tmp_path):
    result = generate(Options(str(MODELS / "fixed_pos.py"), {}, out=tmp_path / "fixed_pos"))
    ok, detail = checked(result.out)[CHECK]
    assert ok, detail
    assert detail.startswith(
        "4 features equal the model's own tensors at 64x64 only (the model does not run at "
        "72x64: RuntimeError: The size of tensor a (72) must match the size of tensor b (64)"
    )


@pytest.mark.parametrize(
    ("model", "sizes"),
    [
        ("cnn", "64x64 and 72x64"),
        ("vit", "32x48 and 40x48 (built with img_size=[40, 48])"),
        ("temporal", "64x64 and 72x64"),
        ("swin3d", "64x64 and 96x64"),
    ],
)
def test_an_untouched_backbone_matches_its_model(generated, model, sizes):
    found = checked(generated[model].out)
    ok, detail = found[CHECK]
    assert ok, detail
    assert f"equal the model's own tensors at {sizes}" in detail
    assert "each carries a gradient to the input" in detail


def test_the_truth_the_check_reads_is_the_plain_model_s(generated):
    """Hooks on a plain SmallCNN with the backbone's weights give what the backbone returns:
    what the check holds it to, read here without the check's code."""
    import sys

    import timm
    import torch

    sys.path.insert(0, str(MODELS))
    from cnn import SmallCNN

    out = generated["cnn"].out
    found = quick(out)  # the ladder runs it right after `features`, with --quick too
    assert list(found)[:5] == ["folder", "import", "features", CHECK, "determinism"]
    assert found[CHECK][0], found[CHECK]
    backbone = timm.create_model(generated["cnn"].backbone).eval()
    plain = SmallCNN().eval()
    missing = plain.load_state_dict(backbone.model.state_dict(), strict=False).missing_keys
    assert missing == ["head.weight", "head.bias"]  # the pruned head only
    seen = []
    for name in ("stem", "stage1", "stage2"):
        plain.get_submodule(name).register_forward_hook(lambda m, a, o: seen.append(o))
    x = torch.rand(2, 4, 72, 64)
    with torch.no_grad():
        plain(x)
        features = backbone(x)
    assert [tuple(f.shape) for f in features] == [(2, 8, 36, 32), (2, 16, 18, 16), (2, 32, 9, 8)]
    assert all(torch.equal(a, b) for a, b in zip(features, seen, strict=True))
