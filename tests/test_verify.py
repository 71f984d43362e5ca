"""The check ladder: passing on fresh output, and failing with a finding that names the problem."""

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from scaffold.pipeline.new_backbone import Options, generate
from scaffold.verify.benchmark import read_metrics
from scaffold.verify.ladder import verify_dir

from .conftest import (
    BIN,
    MODELS,
    SWIN3D,
    clean_env,
    run_cli,
    run_cli_fresh,
    run_json,
)


def checks(report) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in report.checks}


@pytest.mark.e2e
@pytest.mark.parametrize(
    "layout",
    ["cnn", "vit", "channels_last", "temporal", "dict_out", "list_out", "tokens", "swin3d"],
)
def test_verify_passes_for_every_layout(generated, layout):
    report = verify_dir(generated[layout].out)
    found = checks(report)
    assert report.ok, found
    assert list(found) == [
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
    value = float(found["benchmark"][1].split("= ")[-1])
    assert math.isfinite(value) and value > 0  # a cross-entropy loss on random data


@pytest.fixture()
def fresh_copy(generated, tmp_path):
    """A private copy of the generated CNN backbone, free to break."""

    def make(layout: str = "cnn") -> Path:
        source = generated[layout].out
        out = tmp_path / source.name
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("runs", "__pycache__"))
        # The copy's absolute paths must point at itself.
        for path in [*out.rglob("*.yaml"), *out.rglob("*.py")]:
            path.write_text(path.read_text().replace(str(source), str(out)))
        return out

    return make


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, count))


def test_wrong_channel_count_is_named(generated, fresh_copy):
    out = fresh_copy()
    edit(out / "small_cnn" / "backbone.py", '"num_chs": 16,', '"num_chs": 17,')
    report = verify_dir(out, quick=True)
    ok, detail = checks(report)["features"]
    assert not ok
    assert detail == "feature 1 (`model.stage1`) has 16 channels, feature_info says 17"


def test_forward_returning_one_feature_too_few(fresh_copy):
    out = fresh_copy()
    edit(
        out / "small_cnn" / "backbone.py",
        "    constants = CONSTANTS\n",
        "    constants = CONSTANTS\n\n"
        "    def forward(self, x):\n"
        "        return super().forward(x)[:-1]\n",
    )
    ok, detail = checks(verify_dir(out, quick=True))["features"]
    assert not ok
    assert (
        detail == "the backbone's forward returns 2 features, out_channels and feature_info list 3"
    )


def test_factory_that_raises(fresh_copy):
    out = fresh_copy()
    edit(
        out / "small_cnn" / "factory.py",
        "        if not isinstance(backbone, nn.Module):",
        "        raise ValueError('decoder not supported yet')\n        if not isinstance(backbone, nn.Module):",
    )
    report = verify_dir(out, quick=True)
    ok, detail = checks(report)["factory"]
    assert not ok
    assert detail == (
        "SmallCnnFactory.build_model('segmentation') raised ValueError: decoder not supported yet"
    )
    assert not report.ok


@pytest.mark.e2e
def test_yaml_key_the_parser_rejects(fresh_copy):
    out = fresh_copy()
    config = out / "benchmark.yaml"
    config.write_text(config.read_text() + "backbone_import: small_cnn\n")
    report = verify_dir(out)
    ok, detail = checks(report)["benchmark"]
    assert not ok
    assert "Option 'backbone_import' is not accepted" in detail
    assert re.search(r"log: .*/\.scaffold/runs/\d{8}-\d{6}/iterate\.log", detail)
    assert checks(report)["factory"][0]  # the earlier rungs still pass


def test_weights_that_fit_and_weights_that_do_not(tmp_path):
    from scaffold.analyse.trace import build_model
    from scaffold.resolve.target import resolve_target

    model = build_model(resolve_target(str(MODELS / "cnn.py")).obj, {}, "cpu")
    good = tmp_path / "good.pt"
    # A checkpoint as DataParallel saves it: every key under `module.`.
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, good)
    result = generate(Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "ok", weights=good))
    assert checks(verify_dir(result.out, quick=True))["weights"][0]

    import timm

    stem = model.state_dict()["stem.0.weight"]  # (8, 4, 3, 3)
    loaded = timm.create_model(result.backbone, pretrained=True)
    assert torch.equal(loaded.state_dict()["model.stem.0.weight"], stem)
    # first_conv: timm adapts the 4-band weights to 6 bands (repeated, scaled by 4/6).
    six = timm.create_model(result.backbone, pretrained=True, in_chans=6)
    adapted = six.state_dict()["model.stem.0.weight"]
    assert adapted.shape == (8, 6, 3, 3)
    assert torch.allclose(adapted[:, :4], stem * 4 / 6) and torch.allclose(
        adapted[:, 4:], stem[:, :2] * 4 / 6
    )
    # The seed recipe: no --weights, the file given through pretrained_cfg_overlay.
    plain = generate(Options(str(MODELS / "cnn.py"), {}, name="overlay_cnn", out=tmp_path / "o"))
    assert verify_dir(plain.out, quick=True).ok
    overlay = timm.create_model(
        plain.backbone, pretrained=True, pretrained_cfg_overlay={"file": str(good)}
    )
    assert torch.equal(overlay.state_dict()["model.stem.0.weight"], stem)

    bad = tmp_path / "bad.pt"
    state = dict(model.state_dict())
    state["stage2.0.0.weight"] = torch.zeros(32, 16, 5, 5)  # another kernel size
    del state["stem.1.running_mean"]
    state["extra.bias"] = torch.zeros(3)
    torch.save(state, bad)
    result = generate(
        Options(
            str(MODELS / "cnn.py"), {}, name="bad_weights_cnn", out=tmp_path / "bad", weights=bad
        )
    )
    ok, detail = checks(verify_dir(result.out, quick=True))["weights"]
    assert not ok
    assert "1 missing from the checkpoint: model.stem.1.running_mean" in detail
    assert "1 unexpected: model.extra.bias" in detail
    assert "model.stage2.0.0.weight (32, 16, 5, 5) vs (32, 16, 3, 3)" in detail


@pytest.mark.e2e
def test_verify_cli_exit_codes_and_json(generated, tmp_path):
    # The exit codes and the JSON as a person's shell gets them: fresh processes.
    code, data = run_json("verify", str(generated["channels_last"].out), "--quick", fresh=True)
    assert code == 0 and data["ok"] is True
    names = [c["name"] for c in data["checks"]]
    assert names == [
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
    ]
    not_generated = tmp_path / "plain"
    not_generated.mkdir()
    done = run_cli_fresh("verify", str(not_generated))
    assert done.returncode == 2 and "not made by `scaffold new-backbone`" in done.stderr
    done = run_cli_fresh("verify", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "no such directory" in done.stderr


def test_verify_cli_exits_1_on_a_failed_check(fresh_copy):
    out = fresh_copy()
    edit(out / "small_cnn" / "backbone.py", '"num_chs": 32,', '"num_chs": 31,')
    code, data = run_json("verify", str(out), "--quick")
    assert code == 1 and data["ok"] is False
    failed = [c for c in data["checks"] if not c["ok"]]
    assert failed[0]["detail"] == "feature 2 (`model.stage2`) has 32 channels, feature_info says 31"


@pytest.mark.e2e
def test_generated_yaml_runs_with_the_plain_terratorch_command(tmp_path):
    """As a person runs it: the line scaffold prints, in a fresh shell started in another
    directory, with no MLflow setting of their own."""
    from scaffold.console import run_line

    code, data = run_json(
        "new-backbone", str(SWIN3D), "--out", str(tmp_path / "swin"), "--no-verify", fresh=True
    )
    assert code == 0
    config = Path(data["benchmark_config"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    line = run_line(config.parent, config)
    assert line == (
        f"cd {config.parent} && MLFLOW_ALLOW_FILE_STORE=true terratorch iterate --hpo --config "
        "benchmark.yaml"
    )
    env = clean_env() | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", line], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(config, 0)
    assert list(metrics) == ["smoke: best_val/loss"]
    assert math.isfinite(metrics["smoke: best_val/loss"])
    storage = yaml.safe_load(config.read_text())["storage_uri"]
    assert storage == "runs/hpo" and (config.parent / storage).is_dir()
    assert not (elsewhere / "runs").exists()


@pytest.mark.e2e
@pytest.mark.parametrize(("task", "model"), [("classification", "cnn"), ("regression", "vit")])
def test_new_backbone_verifies_each_task(tmp_path, task, model):
    # One of them from start to verified in a fresh process, as the README's first command runs.
    code, data = run_json(
        "new-backbone",
        str(MODELS / f"{model}.py"),
        "--out",
        str(tmp_path / task),
        "--task",
        task,
        fresh=task == "classification",
    )
    assert code == 0 and data["verified"] is True, data
    config = yaml.safe_load(Path(data["benchmark_config"]).read_text())
    assert config["tasks"][0]["type"] == task
    factory = next(c for c in data["checks"] if c["name"] == "factory")["detail"]
    shape = "(2, 2)" if task == "classification" else "(2, 32, 48)"
    assert f"builds the {task} model; output {shape}" in factory


def test_temporal_classification_is_refused_with_the_reason(tmp_path):
    done = run_cli(
        "new-backbone",
        str(MODELS / "temporal.py"),
        "--out",
        str(tmp_path / "t"),
        "--task",
        "classification",
    )
    assert done.returncode == 2
    assert "cannot read multitemporal images" in done.stderr
    assert not (tmp_path / "t").exists()
