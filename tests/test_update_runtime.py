"""`scaffold update` of a package generated before the runtime (its generic code written into
backbone.py and registration.py, tests/fixtures/layout0: the templates of that layout) moves it to
the runtime, keeping the person's edits; the runtime's copy is replaced, never merged, and a hand
edit in it is kept aside and named."""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import sys
from pathlib import Path

import jinja2
import pytest

from scaffold.pipeline.new_backbone import Options, generate
from scaffold.render.backbone import RUNTIME_DIR, format_python, template_data
from scaffold.write.state import read_state, with_bases

from .conftest import MODELS, copy_model, run_json

LAYOUT0 = Path(__file__).parent / "fixtures" / "layout0"


def to_layout0(out: Path, package: str) -> None:
    """Rewrite the generated folder `out` as the layout before the runtime generated it: its
    backbone.py and registration.py rendered from that layout's templates (state.json's bases
    too), no _runtime/."""
    from scaffold.pipeline import render_options

    state = read_state(out)
    data = template_data(state.spec, render_options(state.options, (), ()))
    env = jinja2.Environment(keep_trailing_newline=True)
    rendered: dict[str, bytes] = {}
    for name in ("backbone.py", "registration.py"):
        text = env.from_string((LAYOUT0 / f"{name}.jinja").read_text()).render(**data)
        (out / package / name).write_text(text)
        format_python(out, [f"{package}/{name}"])
        rendered[f"{package}/{name}"] = (out / package / name).read_bytes()
    shutil.rmtree(out / package / RUNTIME_DIR)
    files = tuple(f for f in state.files if f"/{RUNTIME_DIR}/" not in f)
    bases = {rel: _base(out, state, rel) for rel in files} | rendered
    old = with_bases(dataclasses.replace(state, files=files, bases=None), bases)
    (out / ".scaffold" / "state.json").write_text(old.to_json())


def _base(out: Path, state, rel: str) -> bytes:
    from scaffold.write.state import read_pristine

    content = read_pristine(out, state, rel)
    assert content is not None
    return content


@pytest.fixture()
def old_package(tmp_path):
    model = copy_model("cnn", tmp_path / "models", new_name="upd_layout0")
    result = generate(Options(str(model), {}, name="upd_layout0_bb", out=tmp_path / "out"))
    to_layout0(result.out, result.backbone)
    backbone = result.package / "backbone.py"
    assert "def _frame_grid(" in backbone.read_text()  # the old layout, generic code inside
    return result


def import_backbone(result):
    sys.path.insert(0, str(result.out))
    try:
        return importlib.import_module(f"{result.backbone}.backbone")
    finally:
        sys.path.remove(str(result.out))


def test_an_old_package_moves_to_the_runtime_keeping_its_constants_and_naming_other_edits(
    old_package,
):
    result = old_package
    backbone = result.package / "backbone.py"
    old = backbone.read_text()
    # Two hand edits: a constant (kept in the new file) and a runtime-owned method (kept aside).
    old = old.replace(
        "OUT_INDICES: tuple[int, ...] = (0, 1, 2)", "OUT_INDICES: tuple[int, ...] = (1, 2)"
    )
    assert "(1, 2)" in old
    mine = "        return [f.clone() for f in features]\n"
    old = old.replace(
        "            )\n        return features\n\n    def prepare_features_for_image_model",
        "            )\n" + mine + "\n    def prepare_features_for_image_model",
    )
    assert mine in old
    backbone.write_text(old)
    code, data = run_json("update", str(result.out), "--no-verify")
    assert code == 0, data
    new = backbone.read_text()
    assert "from ._runtime.backbone import" in new and "def _frame_grid(" not in new
    assert "OUT_INDICES: tuple[int, ...] = (1, 2)" in new  # the person's value, carried
    aside = f"{result.backbone}/backbone.py.orig-0.1.0"
    assert (result.out / aside).read_text() == old  # not lost
    kept = data["kept_aside"]
    assert len(kept) == 1 and kept[0]["kept_as"] == aside
    assert kept[0]["edits"] == [f"{type_name(old)}.forward"] and kept[0]["carried"] == [
        "OUT_INDICES"
    ]
    assert (result.package / RUNTIME_DIR / "backbone.py").is_file()
    # the untouched registration.py simply moved to the new layout
    assert (
        "from ._runtime.checkpoint import checkpoint_filter"
        in (result.package / "registration.py").read_text()
    )
    module = import_backbone(result)
    assert module.OUT_INDICES == (1, 2)
    assert getattr(module, type_name(old))().out_indices == (1, 2)
    # a second update finds nothing to do
    code, data = run_json("update", str(result.out), "--no-verify")
    assert code == 0 and data["changes"] == [] and data["kept_aside"] == [], data


def type_name(source: str) -> str:
    return next(
        line.split("(")[0].removeprefix("class ")
        for line in source.splitlines()
        if line.startswith("class ") and "Backbone(" in line
    )


def test_an_untouched_old_package_updates_without_keeping_anything_aside(old_package):
    result = old_package
    code, data = run_json("update", str(result.out), "--no-verify")
    assert code == 0 and data["kept_aside"] == [], data
    assert not list(result.package.glob("*.orig-*"))
    changed = {Path(c["file"]).as_posix().split("/out/")[-1] for c in data["changes"]}
    assert f"{result.backbone}/backbone.py" in changed
    assert f"{result.backbone}/{RUNTIME_DIR}/backbone.py" in changed


def test_a_hand_edit_in_the_runtime_copy_is_replaced_and_kept_aside(tmp_path):
    model = copy_model("cnn", tmp_path / "models", new_name="upd_runtime_edit")
    result = generate(Options(str(model), {}, name="upd_runtime_edit_bb", out=tmp_path / "out"))
    copy = result.package / RUNTIME_DIR / "layouts.py"
    pristine = copy.read_text()
    copy.write_text(pristine.replace("return x.mean(dim=2)", "return x.median(dim=2).values"))
    code, data = run_json("update", str(result.out), "--no-verify")
    assert code == 0, data
    assert copy.read_text() == pristine  # replaced, not merged
    aside = result.package / RUNTIME_DIR / "layouts.py.orig-0.1.0"
    assert "median" in aside.read_text()
    assert data["kept_aside"] == [
        {
            "file": f"{result.backbone}/{RUNTIME_DIR}/layouts.py",
            "kept_as": f"{result.backbone}/{RUNTIME_DIR}/layouts.py.orig-0.1.0",
            "edits": ["the runtime itself"],
            "carried": [],
        }
    ]
    assert json.loads((result.out / ".scaffold" / "state.json").read_text())["files"]
    assert MODELS.is_dir()
