"""Resolving TARGET: files, classes, builder functions, packages with relative imports, --arg."""

from pathlib import Path

import pytest
import torchvision

from scaffold.errors import ScaffoldError
from scaffold.resolve.target import parse_args, parse_input_shape, resolve_target, split_target

from .conftest import MODELS

TORCHVISION_MODELS = Path(torchvision.__file__).parent / "models"


def test_file_picks_the_model_class():
    resolved = resolve_target(str(MODELS / "vit.py"))
    assert (resolved.name, resolved.kind, resolved.module) == ("TinyViT", "class", "vit")
    assert resolved.import_root == MODELS


def test_file_with_name_and_builder_function_in_a_package():
    resolved = resolve_target(f"{TORCHVISION_MODELS / 'resnet.py'}:resnet18")
    # resnet.py does `from ..utils import ...`: it must import as torchvision.models.resnet.
    assert resolved.module == "torchvision.models.resnet"
    assert resolved.kind == "function" and resolved.name == "resnet18"
    assert resolved.import_root == TORCHVISION_MODELS.parent.parent


def test_dotted_module_target():
    resolved = resolve_target("torchvision.models.convnext:ConvNeXt")
    assert resolved.kind == "class" and resolved.obj.__name__ == "ConvNeXt"


def test_relative_imports_inside_a_package(tmp_path: Path):
    pkg = tmp_path / "zoo_pkg" / "nets"
    pkg.mkdir(parents=True)
    (tmp_path / "zoo_pkg" / "__init__.py").write_text("")
    (tmp_path / "zoo_pkg" / "layers.py").write_text(
        "from torch import nn\n\ndef conv(c):\n    return nn.Conv2d(3, c, 3, 2, 1)\n"
    )
    (pkg / "__init__.py").write_text("")
    (pkg / "net.py").write_text(
        "from torch import nn\nfrom ..layers import conv\n\n\n"
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.c = conv(8)\n\n    def forward(self, x):\n        return self.c(x)\n"
    )
    resolved = resolve_target(str(pkg / "net.py"))
    assert (resolved.module, resolved.name, resolved.import_root) == (
        "zoo_pkg.nets.net",
        "Net",
        tmp_path,
    )


def test_split_target():
    assert split_target("a/b.py:Net") == ("a/b.py", "Net")
    assert split_target("a/b.py") == ("a/b.py", None)
    assert split_target("pkg.mod:make") == ("pkg.mod", "make")


def test_args_are_yaml():
    assert parse_args(["depths=[2,2,6,2]", "in_chans=6", "use_cls=true", "name=vit", "p=0.5"]) == {
        "depths": [2, 2, 6, 2],
        "in_chans": 6,
        "use_cls": True,
        "name": "vit",
        "p": 0.5,
    }


@pytest.mark.parametrize(
    ("pairs", "message"),
    [(["depths=[2,2"], "not valid YAML"), (["noequals"], "expected NAME=VALUE")],
)
def test_bad_args(pairs, message):
    with pytest.raises(ScaffoldError, match=message):
        parse_args(pairs)


def test_input_shape():
    assert parse_input_shape("6,64,64") == (6, 64, 64)
    assert parse_input_shape("6,4,64,64") == (6, 4, 64, 64)
    with pytest.raises(ScaffoldError, match="C,H,W or C,T,H,W"):
        parse_input_shape("64,64")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing/model.py", "no such file"),
        (f"{MODELS / 'cnn.py'}:Nope", "no class or function named 'Nope'"),
        ("no_such_package_xyz.mod:Net", "no module named 'no_such_package_xyz'"),
    ],
)
def test_bad_targets(target, message):
    with pytest.raises(ScaffoldError, match=message):
        resolve_target(target)


def test_ambiguous_file_asks_for_a_name():
    # PatchMergingV2 and SwinTransformerBlockV2 are used only by builder functions.
    with pytest.raises(ScaffoldError, match=r"several classes .*SwinTransformer\).*:Name"):
        resolve_target(str(TORCHVISION_MODELS / "swin_transformer.py"))


def test_resnet_file_picks_resnet_over_its_blocks():
    # ResNet names BasicBlock and Bottleneck (in annotations): they are its parts.
    assert resolve_target(str(TORCHVISION_MODELS / "resnet.py")).name == "ResNet"
