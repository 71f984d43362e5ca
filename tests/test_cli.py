"""The command line as a person meets it: help, inspect's JSON, one-line errors with exit 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import MODELS, SWIN3D, run_cli


def test_help_lists_the_commands():
    done = run_cli("--help")
    assert done.returncode == 0
    for command in ("inspect", "new-backbone", "verify", "update"):
        assert command in done.stdout


def test_start_up_imports_no_heavy_library():
    code = "import sys, scaffold.cli; print(sorted(m for m in ('torch', 'timm', 'libcst', 'copier', 'terratorch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_inspect_json_is_the_spec():
    done = run_cli("inspect", str(SWIN3D), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # stdout holds the JSON object and nothing else
    assert data["target"] == str(SWIN3D)
    assert data["input_shape"] == [1, 6, 4, 64, 64]
    assert [(f["module"], f["num_chs"], f["reduction"], f["layout"]) for f in data["features"]] == [
        ("layers.0.blocks.1", 48, 4, "NTHWC"),
        ("layers.1.blocks.1", 96, 8, "NTHWC"),
        ("layers.2.blocks.1", 192, 16, "NTHWC"),
        ("norm", 384, 32, "NTHWC"),
    ]
    assert data["out_indices"] == [0, 1, 2, 3]


def test_inspect_table_and_args():
    done = run_cli(
        "inspect", str(MODELS / "cnn.py"), "--arg", "width=4", "--input-shape", "4,32,32"
    )
    assert done.returncode == 0, done.stderr
    assert "stage2" in done.stdout and "16" in done.stdout
    assert "out_indices [0, 1, 2]" in done.stdout


@pytest.fixture()
def broken(tmp_path: Path) -> dict[str, Path]:
    files = {
        "syntax": "import torch\nclass X(torch.nn.Module:\n    pass\n",
        "nomodule": "x = 1\n",
        "needs": "from torch import nn\nclass N(nn.Module):\n    def __init__(self, depth):\n        super().__init__()\n",
        "raises": "import torch\nfrom torch import nn\nclass R(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.c = nn.Conv2d(3, 4, 3)\n    def forward(self, x):\n        raise RuntimeError('model says no')\n",
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}_model.py"
        paths[name].write_text(text)
    return paths


@pytest.mark.parametrize(
    ("case", "extra", "expected"),
    [
        ("missing", [], "no such file"),
        ("syntax", [], "syntax_model.py:2:"),
        ("nomodule", [], "defines no torch.nn.Module subclass"),
        ("needs", [], "needs arguments that were not given: depth"),
        ("raises", [], "RuntimeError: model says no"),
        ("needs", ["--arg", "depth=[1,"], "not valid YAML"),
        ("unknown", [], "no class or function named 'Nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(broken, case, extra, expected):
    if case == "missing":
        target = "does/not/exist.py"
    elif case == "unknown":
        target = f"{MODELS / 'cnn.py'}:Nope"
    else:
        target = str(broken[case])
    done = run_cli("inspect", target, *extra)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
