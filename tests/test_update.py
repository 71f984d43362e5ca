"""`scaffold update`: the model changes, every hand edit stays, and nothing is ever half-written."""

import fcntl
import json
import os
import re
from pathlib import Path

import pytest

from scaffold.errors import ScaffoldError
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.write.state import encode_base

from .conftest import copy_model, run_cli, run_json

STAGE3 = "        self.stage3 = nn.Sequential(block(width * 4, width * 8, 2), block(width * 8, width * 8, 1))\n"


def add_stage(model: Path) -> None:
    """A fourth stage, 64 channels at reduction 16."""
    text = model.read_text()
    text = text.replace(
        "        self.pool = nn.AdaptiveAvgPool2d(1)\n",
        STAGE3 + "        self.pool = nn.AdaptiveAvgPool2d(1)\n",
    )
    text = text.replace("nn.Linear(width * 4, 10)", "nn.Linear(width * 8, 10)")
    text = text.replace(
        "x = self.stage2(self.stage1(self.stem(x)))",
        "x = self.stage3(self.stage2(self.stage1(self.stem(x))))",
    )
    model.write_text(text)


def snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(out.rglob("*"))
        if p.is_file() and "runs" not in p.parts
    }


@pytest.fixture()
def project(tmp_path, request):
    """A CNN model file of its own (unique module name) and its generated backbone."""
    name = f"upd_{request.node.name.split('[')[0].removeprefix('test_')}"[:40]
    model = copy_model("cnn", tmp_path / "models", new_name=name)
    result = generate(Options(str(model), {}, name=f"{name}_bb", out=tmp_path / "out"))
    return model, result


def python_files(result) -> list[Path]:
    return sorted(result.package.glob("*.py"))


@pytest.mark.e2e
def test_update_keeps_every_hand_edit_and_brings_the_new_stage(project):
    model, result = project
    edited = [*python_files(result), result.benchmark_config]
    for path in edited:
        path.write_text(path.read_text() + f"# hand edit in {path.name}\n")
    add_stage(model)
    code, data = run_json("update", str(result.out))
    assert code == 0, data
    assert data["verified"] is True
    for path in edited:
        assert path.read_text().endswith(f"# hand edit in {path.name}\n"), path
    backbone = (result.package / "backbone.py").read_text()
    assert '{"module": "model.stage3", "num_chs": 64, "reduction": 16,' in backbone
    assert "OUT_INDICES: tuple[int, ...] = (0, 1, 2, 3)" in backbone
    assert [c["action"] for c in data["changes"]] == ["merged"]  # only backbone.py changed
    assert [c["name"] for c in data["checks"] if c["ok"]] == [
        "folder",
        "import",
        "features",
        "features match model",
        "determinism",
        "data",
        "factory",
        "trainable",
        "fit configs",
        "sizes",
        "benchmark",
    ]


def test_update_without_a_model_change_touches_nothing(project):
    _model, result = project
    (result.package / "factory.py").write_text(
        (result.package / "factory.py").read_text() + "# mine\n"
    )
    before = snapshot(result.out)
    done = run_cli("update", str(result.out), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert "nothing changed" in done.stderr
    after = snapshot(result.out)
    after.pop(".scaffold/lock", None)
    before.pop(".scaffold/lock", None)
    assert after == before  # same bytes, same modification times


FIVE = "widths: tuple[int, ...] = (24, 48, 96, 192, 384),"


@pytest.mark.e2e
def test_update_brings_a_fifth_stage_that_reaches_one_cell(tmp_path):
    # Four stride-2 stages after a stride-2 stem end at 2x2 (192 channels) at 64x64; a fifth
    # turns that into one cell with a strided conv: a level (it is 2x2 at 128x128), so the
    # update brings it into the generated code, and the benchmark runs with it.
    model = copy_model("deep_cnn", tmp_path / "models", new_name="upd_grows")
    text = model.read_text()
    assert text.count(FIVE) == 1
    model.write_text(text.replace(FIVE, FIVE.replace(", 384)", ")")))
    target = f"{model}:DeepCNN"
    result = generate(Options(target, {}, name="upd_grows_bb", out=tmp_path / "out"))
    backbone = result.package / "backbone.py"
    assert re.search(r'"module": "model\.down\.3",\s+"num_chs": 192,', backbone.read_text())
    assert '"model.down.4"' not in backbone.read_text()
    model.write_text(text)  # the fifth stage
    code, data = run_json("update", str(result.out))
    assert code == 0, data
    assert data["verified"] is True
    assert data["analysis_changes"] == [
        "new feature down.4: 384 channels at reduction 64",
        "default features down.0, down.1, down.2, down.3 -> down.1, down.2, down.3, down.4",
    ]
    assert data["changes"] == [{"file": "upd_grows_bb/backbone.py", "action": "updated"}]
    code_now = backbone.read_text()
    assert re.search(r'"module": "model\.down\.4",\s+"num_chs": 384,\s+"reduction": 64,', code_now)
    assert "OUT_INDICES: tuple[int, ...] = (2, 3, 4, 5)" in code_now
    state = json.loads((result.out / ".scaffold" / "state.json").read_text())
    assert [f["num_chs"] for f in state["spec"]["features"]][-1] == 384
    assert state["spec"]["head_modules"] == ["head"]
    benchmark = next(c for c in data["checks"] if c["name"] == "benchmark")
    assert benchmark["ok"], benchmark  # benchmark.yaml ran with the five-stage backbone


def test_an_analysis_change_in_the_head_is_said_and_reaches_the_backbone(project):
    # A dropout before the classifier changes no feature, but the re-analysis leaves one more
    # module out as the head: the update says so, and the backbone is built without it (the
    # features' `after` in backbone.py name it), nothing else changes.
    model, result = project
    text = model.read_text()
    text = text.replace(
        "        self.head = nn.Linear(width * 4, 10)\n",
        "        self.drop = nn.Dropout(0.1)\n        self.head = nn.Linear(width * 4, 10)\n",
    )
    text = text.replace(
        "self.head(self.pool(x).flatten(1))", "self.head(self.drop(self.pool(x).flatten(1)))"
    )
    model.write_text(text)
    before = snapshot(result.out)
    done = run_cli("update", str(result.out), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert "the model's analysis changed:\n  newly left out as the head: drop\n" in done.stderr
    after = snapshot(result.out)
    for files in (before, after):
        for rel in (".scaffold/lock", ".scaffold/state.json"):
            files.pop(rel, None)
    backbone = f"{result.backbone}/backbone.py"
    assert {rel for rel in after if after[rel] != before.get(rel)} == {backbone}
    assert b"model.drop" in after[backbone][0] and b"model.drop" not in before[backbone][0]
    state = json.loads((result.out / ".scaffold" / "state.json").read_text())
    assert state["spec"]["head_modules"] == ["pool", "drop", "head"]
    again = run_cli("update", str(result.out), "--no-verify")
    assert "nothing changed" in again.stderr and "analysis changed" not in again.stderr


@pytest.mark.e2e
def test_conflict_on_the_lines_the_update_changes(project):
    model, result = project
    backbone = result.package / "backbone.py"
    backbone.write_text(
        backbone.read_text().replace(
            "OUT_INDICES: tuple[int, ...] = (0, 1, 2)", "OUT_INDICES: tuple[int, ...] = (1, 2)"
        )
    )
    add_stage(model)
    code, data = run_json("update", str(result.out))
    assert code == 1
    assert data["conflicts"] == [str(backbone)]
    text = backbone.read_text()
    assert "<<<<<<< yours (on disk)\nOUT_INDICES: tuple[int, ...] = (1, 2)\n" in text
    assert "=======\nOUT_INDICES: tuple[int, ...] = (0, 1, 2, 3)\n>>>>>>> regenerated" in text
    assert '"module": "model.stage3"' in text  # the rest merged cleanly
    done = run_cli("update", str(result.out), "--no-verify")
    assert done.returncode in (0, 1)
    assert "<<<<<<<" in backbone.read_text()  # the person's file is never overwritten


def test_conflict_is_named_on_the_terminal(project):
    model, result = project
    config = result.benchmark_config
    config.write_text(config.read_text().replace("backbone_in_chans: 4", "backbone_in_chans: 5"))
    model.write_text(model.read_text().replace("in_chans: int = 4", "in_chans: int = 7"))
    done = run_cli("update", str(result.out), "--no-verify")
    assert done.returncode == 1
    assert "conflict in benchmark.yaml" in done.stderr


def test_dry_run_writes_nothing_and_shows_the_diff(project):
    model, result = project
    add_stage(model)
    before = snapshot(result.out)
    done = run_cli("update", str(result.out), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "+++ b/" + f"{result.backbone}/backbone.py" in done.stdout
    assert '+    {"module": "model.stage3",' in done.stdout
    assert "+OUT_INDICES: tuple[int, ...] = (0, 1, 2, 3)" in done.stdout
    after = snapshot(result.out)
    after.pop(".scaffold/lock", None)
    assert after == before


def test_a_deleted_file_stays_deleted_and_is_reported(project):
    model, result = project
    (result.package / "factory.py").unlink()
    add_stage(model)
    code, data = run_json("update", str(result.out), "--no-verify")
    assert code == 0
    assert {"file": f"{result.backbone}/factory.py", "action": "kept-deleted"} in data["changes"]
    assert not (result.package / "factory.py").exists()


def test_template_changes_flow_through_the_same_merge(project):
    """As if an older scaffold had written another comment: pristine and disk both have it."""
    _model, result = project
    rel = f"{result.backbone}/registration.py"
    old_comment = (
        "# The model's first convolution. Conv2d: timm adapts pretrained weights to another"
    )
    disk = result.out / rel
    disk.write_text(disk.read_text().replace(old_comment, "# Prefixes (old wording)."))
    state_path = result.out / ".scaffold" / "state.json"
    state = json.loads(state_path.read_text())
    state["bases"][rel] = encode_base(disk.read_bytes())  # what the older scaffold rendered
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    disk.write_text(disk.read_text() + "# mine\n")
    code, _data = run_json("update", str(result.out), "--no-verify")
    assert code == 0
    text = disk.read_text()
    assert old_comment in text and "old wording" not in text and text.endswith("# mine\n")


def test_a_second_process_is_refused_while_one_holds_the_lock(project):
    _model, result = project
    lock = result.out / ".scaffold" / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        done = run_cli("update", str(result.out), "--no-verify")
    finally:
        os.close(fd)
    assert done.returncode == 2
    assert "another scaffold process is working on it" in done.stderr


def test_interrupted_update_leaves_each_file_old_or_new(project, monkeypatch):
    import scaffold.pipeline.update as update

    model, result = project
    add_stage(model)
    before = {p: p.read_bytes() for p in result.out.rglob("*") if p.is_file()}
    writes = []
    real_write = update.write_atomic

    def interrupted_write(path, content):
        if len(writes) == 1:  # the file is written, the state not yet
            raise KeyboardInterrupt
        writes.append(path)
        real_write(path, content)

    monkeypatch.setattr(update, "write_atomic", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        update.update_dir(result.out)
    assert len(writes) == 1
    middle = {p: p.read_bytes() for p in result.out.rglob("*") if p.is_file()}
    monkeypatch.setattr(update, "write_atomic", real_write)
    update.update_dir(result.out)  # a second run completes the job
    final = {p: p.read_bytes() for p in result.out.rglob("*") if p.is_file()}
    journal = result.out / ".scaffold" / "journal.json"  # what lets the next run roll it back
    assert journal in middle and journal not in final
    for path, content in middle.items():
        # Every file, the state included, is either as it was or as the finished update left it.
        assert path == journal or content in (before.get(path), final.get(path)), path
    assert not [p for p in result.out.rglob(".*.*") if p.is_file() and p.name != ".scaffold"]
    assert '"model.stage3"' in (result.package / "backbone.py").read_text()
    state = json.loads((result.out / ".scaffold" / "state.json").read_text())
    assert [f["num_chs"] for f in state["spec"]["features"]] == [8, 16, 32, 64]


def test_a_model_that_lost_its_class_changes_nothing(project):
    model, result = project
    model.write_text(model.read_text().replace("class SmallCNN(", "class Renamed("))
    before = snapshot(result.out)
    done = run_cli("update", str(result.out))
    assert done.returncode == 2
    assert "no class or function named 'SmallCNN'" in done.stderr
    after = snapshot(result.out)
    after.pop(".scaffold/lock", None)
    before.pop(".scaffold/lock", None)
    assert after == before


def test_update_of_a_directory_scaffold_did_not_make(tmp_path):
    done = run_cli("update", str(tmp_path))
    assert done.returncode == 2 and "not made by `scaffold new-backbone`" in done.stderr


def test_scaffold_error_for_update_dir_in_process(tmp_path):
    from scaffold.pipeline.update import update_dir

    with pytest.raises(ScaffoldError, match="no such directory"):
        update_dir(tmp_path / "nope")
