"""Bad input is one line, exit 2, naming the file or value, and nothing is written; a check
never says ok when the real run would fail. Each case as a person (or a killed process) leaves
it: names that shadow, broken values the verifying run's copy would hide, damaged datasets and
MLflow stores, moved data, hand-edited paths, leftovers of interrupted runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaffold.errors import ScaffoldError
from scaffold.generate import Options, generate

from .conftest import MODELS, run_cli
from .test_safety import one_error_line

HELPER = '''"""The building block, in a module of its own beside the model."""

from torch import nn


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())
'''

TWO_FILE_MODEL = '''"""A CNN whose blocks come from a module beside it."""

import torch
from helper import block
from torch import nn


class TwoFileNet(nn.Module):
    def __init__(self, in_chans: int = 4):
        super().__init__()
        self.stem = block(in_chans, 8, 2)
        self.stage1 = block(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stage1(self.stem(x))).flatten(1))
'''


def nothing_but(folder: Path, *names: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


# -- names ---------------------------------------------------------------------------------------
def test_a_name_that_would_shadow_a_module_beside_the_model_is_refused(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "helper.py").write_text(HELPER)
    (models / "two_file_net.py").write_text(TWO_FILE_MODEL)
    done = run_cli(
        "new-backbone", str(models / "two_file_net.py"), "--name", "helper",
        "--out", str(tmp_path / "out"), "--no-verify",
    )  # fmt: skip
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert line.startswith("error: --name 'helper' is the name of a module in the model's folder")
    assert str(models) in line
    nothing_but(tmp_path, "models")
    nothing_but(models, "helper.py", "two_file_net.py")


@pytest.mark.parametrize("name", ["data", "runs", "baselines", "splits"])
def test_names_of_the_folders_scaffold_writes_are_refused(tmp_path, name):
    with pytest.raises(ScaffoldError, match=rf"--name '{name}' is the name of a folder scaffold"):
        generate(Options(str(MODELS / "cnn.py"), {}, name=name, out=tmp_path / "out"))
    nothing_but(tmp_path)
