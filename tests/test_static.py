"""Static analysis with libcst: classes, bases through aliases, parameters, existing hooks."""

from pathlib import Path

import pytest

from scaffold.errors import ScaffoldError
from scaffold.resolve.static import analyse_file

SOURCE = """
import torch
import torch.nn as tnn
from torch import nn
from torch.nn import Module as M


class A(nn.Module):
    def __init__(self, in_chans: int = 6, *, depth=3, **kw):
        super().__init__()

    def forward(self, x, mask=None):
        return x


class B(tnn.Module):
    feature_info = []

    def forward_intermediates(self, x):
        return [x]


class C(M):
    def __init__(self, width):
        self.a = A()
        self.blocks = [B() for _ in range(2)]

    def prepare_features_for_image_model(self, x):
        return x


class D(C):
    pass


class NotAModule:
    pass


def builder():
    return D(4)
"""


@pytest.fixture()
def analysis(tmp_path: Path):
    path = tmp_path / "models.py"
    path.write_text(SOURCE)
    return analyse_file(path)


def test_bases_resolve_through_imports_and_aliases(analysis):
    assert [c.name for c in analysis.classes] == ["A", "B", "C", "D"]
    assert analysis.get("A").bases == ("torch.nn.Module",)
    assert analysis.get("B").bases == ("torch.nn.Module",)
    assert analysis.get("C").bases == ("torch.nn.Module",)
    assert analysis.get("D").bases == ("C",)  # a module through its base in the file
    assert analysis.get("NotAModule") is None
    assert analysis.functions == ("builder",)


def test_init_and_forward_parameters(analysis):
    a = analysis.get("A")
    params = {p.name: p for p in a.init_params}
    assert list(params) == ["in_chans", "depth", "kw"]
    assert (params["in_chans"].default, params["in_chans"].annotation) == ("6", "int")
    assert params["depth"].kind == "keyword" and params["depth"].default == "3"
    assert params["kw"].kind == "var_keyword"
    assert [p.name for p in a.forward_params] == ["x", "mask"]
    assert analysis.get("C").init_params[0].default is None  # `width` is required


def test_existing_hooks(analysis):
    assert analysis.get("A").has == frozenset()
    assert analysis.get("B").has == {"feature_info", "forward_intermediates"}
    assert analysis.get("C").has == {"prepare_features_for_image_model"}


def test_model_class_is_the_one_no_other_class_uses(analysis):
    assert analysis.get("C").parts == {"A", "B"}
    # A and B are parts of C; C is the base of D: only D is left.
    assert [c.name for c in analysis.model_candidates()] == ["D"]


def test_syntax_error_names_file_and_line(tmp_path: Path):
    path = tmp_path / "broken.py"
    path.write_text("import torch\n\nclass X(torch.nn.Module:\n    pass\n")
    with pytest.raises(ScaffoldError, match=r"broken\.py:3:\d+: syntax error"):
        analyse_file(path)
