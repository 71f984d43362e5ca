"""Bad input refused in-process: a ScaffoldError naming the problem, nothing written. (The exit code
2 and the one line of each command are tested through the CLI in test_cli.py, test_generate.py,
test_update.py and test_verify.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from scaffold.errors import ScaffoldError
from scaffold.pipeline import analyse
from scaffold.pipeline.new_backbone import Options, plan_new
from scaffold.pipeline.update import update_dir
from scaffold.verify.ladder import verify_dir

from .conftest import MODELS


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_inspect_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(ScaffoldError, match=r"nope\.py: no such file"):
        analyse(str(tmp_path / "nope.py"))


def test_inspect_of_a_file_without_a_module_names_it(tmp_path):
    (tmp_path / "plain.py").write_text("x = 1\n")
    with pytest.raises(ScaffoldError, match=r"plain\.py"):
        analyse(str(tmp_path / "plain.py"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "detection"}, r"--task 'detection': choose one of segmentation"),
        ({"name": "9lives"}, "must be a Python identifier"),
        ({"weights": "missing.pt"}, r"--weights missing\.pt: no such file"),
    ],
)
def test_new_backbone_refuses_before_the_analysis(tmp_path, changes, message):
    changes = {k: Path(v) if k == "weights" else v for k, v in changes.items()}
    options = Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "out", **changes)
    with pytest.raises(ScaffoldError, match=message):
        plan_new(options)
    assert list(tmp_path.iterdir()) == []  # planning writes nothing


def test_new_backbone_refuses_a_foreign_folder_and_leaves_it_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    before = tree(out)
    with pytest.raises(ScaffoldError, match="not empty and not made by scaffold"):
        plan_new(Options(str(MODELS / "cnn.py"), {}, out=out))
    assert tree(out) == before


def test_a_plan_holds_what_will_be_recorded_and_writes_nothing(tmp_path):
    plan = plan_new(Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert plan.out == (tmp_path / "out").resolve()
    assert plan.recorded.target.endswith("cnn.py:SmallCNN")  # the class, by name from now on
    assert plan.recorded.name == "small_cnn"  # the default name from the class name
    assert plan.spec.target == plan.recorded.target and plan.datasets == ()


@pytest.mark.parametrize("command", [verify_dir, update_dir])
def test_verify_and_update_refuse_a_folder_scaffold_did_not_make(tmp_path, command):
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(ScaffoldError, match=r"not made by `scaffold new-backbone`"):
        command(tmp_path)
    assert tree(tmp_path) == {"notes.txt": b"mine\n"}
