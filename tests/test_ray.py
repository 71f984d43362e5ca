"""The output folder as an installable distribution, and terratorch-iterate's Ray route."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from scaffold.pipeline.new_backbone import Options, generate
from scaffold.pipeline.update import update_dir
from scaffold.render.ray import anchored_mapping, route_difference, route_values
from scaffold.write.names import RAY_CONFIG_FILE
from scaffold.write.state import Options as StateOptions
from scaffold.write.state import encode_base, read_state

from .conftest import MODELS, clean_env, copy_model, run_fresh, run_json

# run_repetitions: iterate's --repeat only; the Ray route's CLI refuses the key.
ROUTE_KEYS = {"custom_modules_path", "run_repetitions", "backbone_import", "tmp_dir"}


@pytest.fixture(scope="module")
def short_root():
    """A folder with a short path: Ray's sockets under tmp_dir must stay within 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="sr-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_out(short_root):
    """`scaffold new-backbone --ray`, as a person runs it: (its JSON, the output folder)."""
    out = short_root / "cnn"
    code, data = run_json(
        "new-backbone", str(MODELS / "cnn.py"), "--name", "ray_cnn", "--out", str(out), "--ray",
        "--no-verify",
    )  # fmt: skip
    assert code == 0, data
    return data, out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def ray_children() -> list[str]:
    """Ray's own processes started by this process and still alive."""
    import psutil

    names = []
    for child in psutil.Process().children(recursive=True):
        try:
            names.append(child.name())
        except psutil.NoSuchProcess:
            continue
    return [n for n in names if "raylet" in n or "gcs_server" in n or n.startswith("ray::")]


def test_the_output_folder_installs_as_the_package_alone(ray_out, tmp_path):
    data, out = ray_out
    name = data["backbone"]
    before = sorted(p.name for p in out.iterdir())
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Only the package (and its metadata): not data/, runs/ or .scaffold/.
    installed = sorted(p.name for p in target.iterdir())
    assert installed == [name, f"{name}-0.1.0.dist-info"]
    assert sorted(p.name for p in (target / name).glob("*.py")) == sorted(
        p.name for p in (out / name).glob("*.py")
    )
    assert sorted(p.name for p in out.iterdir()) == before  # no build/ or egg-info left in DIR
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        f"import json, timm, {name}\n"
        f"m = timm.create_model({name!r}, features_only=True)\n"
        f"print(json.dumps({{'file': {name}.__file__, 'channels': m.feature_info.channels()}}))\n"
    )
    env = clean_env() | {"PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).parent == target / name
    spec = read_state(out).spec
    assert found["channels"] == [f.num_chs for f in spec.selected]


def test_ray_config_differs_from_benchmark_yaml_only_in_route_keys(ray_out):
    data, out = ray_out
    ray_path = out / RAY_CONFIG_FILE
    assert str(ray_path) in data["files"]
    relative, ray = load(out / "benchmark.yaml"), load(ray_path)
    # Ray takes no path relative to the folder: the same paths, absolute.
    classic = anchored_mapping(relative, out)
    assert classic["storage_uri"] == str(out / relative["storage_uri"])
    assert route_difference(classic, ray) == ROUTE_KEYS
    assert "custom_modules_path" not in ray
    assert ray["backbone_import"] == data["backbone"] == "ray_cnn"
    for key in ("tmp_dir", "ray_storage_path"):
        assert Path(ray[key]).is_relative_to(out), (key, ray[key])
    data_root = ray["tasks"][0]["datamodule"]["init_args"]["train_data_root"]
    assert data_root == str(out / "data" / "train" / "img")
    # Same tasks, search space and trials, key for key.
    for key in ("tasks", "optimization_space", "n_trials", "defaults", "storage_uri"):
        assert ray[key] == classic[key]
    text = ray_path.read_text()
    assert "python -m terratorch_iterate.benchmark_ray --config" in text
    assert "8 CPUs and 1 GPU" in text


def test_iterate_ray_parser_accepts_the_ray_config_and_not_the_classic_one(ray_out):
    from scaffold.verify.ray_check import parse_ray_config
    from scaffold.verify.types import CheckFailed

    _, out = ray_out
    parsed, resources = parse_ray_config(out / RAY_CONFIG_FILE)
    assert parsed["backbone_import"] == "ray_cnn"
    assert parsed["tasks"][0]["name"] == "smoke"
    assert resources == {"num_cpus": 8, "num_gpus": 1}  # read from iterate's remote_fit
    with pytest.raises(CheckFailed, match="custom_modules_path"):
        parse_ray_config(out / "benchmark.yaml")


def test_ray_check_passes_then_names_the_workers_import_error(ray_out):
    _, out = ray_out
    code, report = run_json("verify", str(out), "--quick")
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 0, report
    assert checks["ray"]["ok"], checks["ray"]
    assert "out_channels [8, 16, 32]" in checks["ray"]["detail"]
    assert report["checks"][-1]["name"] == "ray"  # Ray answers last: it ran alongside the rest

    # A package that its worker cannot import: the finding names the import error.
    from scaffold.verify import checks as ladder
    from scaffold.verify.ray_check import check_ray
    from scaffold.verify.types import CheckFailed

    init = out / "ray_cnn" / "__init__.py"
    original = init.read_text()
    init.write_text("import dependency_not_installed\n" + original)
    try:
        context = ladder.Context.load(out, read_state(out))
        with pytest.raises(CheckFailed) as failed:
            check_ray(context)
    finally:
        init.write_text(original)
    message = str(failed.value)
    assert "could not import 'ray_cnn'" in message
    assert "No module named 'dependency_not_installed'" in message
    import ray

    assert not ray.is_initialized()
    assert ray_children() == []


@pytest.mark.parametrize("delay", [1.5, 6.0])
def test_a_probe_stopped_early_leaves_no_ray_process(ray_out, delay):
    """verify closes the probe when an earlier check fails: while Ray starts (1.5 s) or while its
    worker imports TerraTorch (6 s), every process Ray started goes with it."""
    from scaffold.verify.ray_check import RayProbe, read_route

    _, out = ray_out
    probe = RayProbe(read_route(out), out)
    time.sleep(delay)
    group = probe.group
    probe.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)  # some process of the group is still there
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"Ray processes of group {group} outlived the probe")


def test_update_ray_adds_the_config_and_keeps_it_in_step(tmp_path):
    model = copy_model("cnn", tmp_path / "models", new_name="upd_ray_model")
    result = generate(Options(str(model), {}, name="upd_ray_bb", out=tmp_path / "out"))
    out = result.out
    assert not (out / RAY_CONFIG_FILE).exists()
    assert (out / "pyproject.toml").is_file()

    added = update_dir(out, ray=True)
    assert (RAY_CONFIG_FILE, "added") in added.changes
    assert read_state(out).options.ray
    assert update_dir(out).changes == []  # recorded: a plain update keeps it, changes nothing

    # As if an older scaffold had written other smoke limits into both files; a hand edit of
    # the Ray config's trials stays, the regenerated limits reach both.
    state_path = out / ".scaffold" / "state.json"
    state = json.loads(state_path.read_text())
    for rel in ("benchmark.yaml", RAY_CONFIG_FILE):
        path = out / rel
        older = path.read_text().replace("limit_train_batches: 2", "limit_train_batches: 7")
        path.write_text(older)
        state["bases"][rel] = encode_base(older.encode())  # what the older scaffold rendered
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    ray_path = out / RAY_CONFIG_FILE
    ray_path.write_text(ray_path.read_text().replace("n_trials: 1", "n_trials: 6"))
    merged = update_dir(out)
    assert merged.conflicts == []
    classic, ray = load(out / "benchmark.yaml"), load(ray_path)
    assert classic["defaults"]["trainer_args"]["limit_train_batches"] == 2
    assert ray["defaults"]["trainer_args"]["limit_train_batches"] == 2
    assert ray["n_trials"] == 6
    assert route_difference(anchored_mapping(classic, out), ray) == ROUTE_KEYS | {"n_trials"}

    update_dir(out, ray=False)  # the person edited it: kept, but no longer regenerated
    assert ray_path.is_file() and not read_state(out).options.ray


def test_old_state_without_the_ray_option_reads_as_off():
    options = StateOptions.from_dict({"target": "m.py:M", "args": {}})
    assert options.ray is False
    assert StateOptions.from_dict({**options.to_dict(), "ray": True}).ray is True


def test_a_deep_output_folder_gets_a_tmp_dir_ray_can_use(tmp_path):
    deep = tmp_path.joinpath(*["nested_folder"] * 6) / "out"
    values = route_values(deep, "some_backbone")
    # Ray's socket paths under it must fit 107 bytes.
    assert len(str(values["tmp_dir"])) + 64 <= 107
    assert Path(values["ray_storage_path"]).is_relative_to(deep)
    short = route_values(Path("/tmp/o"), "some_backbone")
    assert short["tmp_dir"] == "/tmp/o/runs/ray_tmp"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Ray route's trials ask for a GPU")
def test_the_ray_route_runs_the_smoke_task(ray_out, tmp_path):
    """On a GPU machine: the package pip-installed, then iterate's Ray route as a person runs it."""
    from scaffold.verify.benchmark import read_metrics

    _, out = ray_out
    site = tmp_path / "site"
    done = run_fresh(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
         str(out)]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = out / RAY_CONFIG_FILE
    started_ms = int(time.time() * 1000)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "terratorch_iterate.benchmark_ray", "--config", str(config)],
        cwd=elsewhere,
        env=clean_env() | {"PYTHONPATH": str(site), "RAY_USAGE_STATS_ENABLED": "0",
                           "MLFLOW_ALLOW_FILE_STORE": "true"},  # as the printed command sets it
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = read_metrics(config, started_ms)
    assert metrics, done.stdout[-3000:]
    assert all(v == v and abs(v) < float("inf") for v in metrics.values()), metrics


def test_ray_config_and_pyproject_with_a_path_that_needs_quoting(tmp_path):
    import tomllib

    weird = tmp_path / 'it\'s "q": #1'
    model = copy_model("cnn", weird, new_name="quoted_ray_model")
    result = generate(Options(str(model), {}, name="quoted_ray_bb", out=weird / "o d", ray=True))
    classic, ray = load(result.benchmark_config), load(result.out / RAY_CONFIG_FILE)
    assert route_difference(anchored_mapping(classic, result.out), ray) == ROUTE_KEYS
    assert ray["ray_storage_path"] == str(result.out / "runs" / "ray")
    project = tomllib.loads((result.out / "pyproject.toml").read_text())
    assert project["project"]["name"] == "quoted_ray_bb"
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["quoted_ray_bb"]
