"""What a new user trips over: pasteable commands, YAML numbers, file encodings, names, messages,
help, construction counts and the width of the generated code."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from scaffold.console import print_checks
from scaffold.errors import ScaffoldError
from scaffold.pipeline import analyse
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.resolve.static import analyse_file
from scaffold.resolve.target import parse_args, parse_input_shape, resolve_target
from scaffold.verify.types import Check, VerifyReport

from .conftest import MODELS, ROOT, SCAFFOLD, clean_env, run_cli

COUNTED = MODELS / "counted.py"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- --arg numbers ---------------------------------------------------------------------------
def test_numbers_written_as_python_writes_them_are_numbers():
    args = parse_args(["a=1e-3", "b=[1E5, -2.5e+2]", "c='1e-3'", "d=1.0e-3", "e=10", "f=e5"])
    assert args == {
        "a": 0.001,
        "b": [100000.0, -250.0],
        "c": "1e-3",
        "d": 0.001,
        "e": 10,
        "f": "e5",
    }
    assert isinstance(args["a"], float) and isinstance(args["b"][0], float)


def test_arg_1e_minus_3_reaches_the_model_as_a_float(tmp_path: Path):
    model = write(
        tmp_path / "dropnet.py",
        "from torch import nn\n\n\n"
        "class DropNet(nn.Module):\n"
        "    def __init__(self, drop: float = 0.1):\n"
        "        super().__init__()\n"
        "        if not isinstance(drop, float):\n"
        "            raise TypeError(f'drop must be a float, got {drop!r}')\n"
        "        self.drop = drop\n"
        "        self.stem = nn.Conv2d(3, 8, 3, 2, 1)\n"
        "        self.stage = nn.Conv2d(8, 16, 3, 2, 1)\n\n"
        "    def forward(self, x):\n"
        "        return self.stage(self.stem(x)) * (1 - self.drop)\n",
    )
    spec = analyse(str(model), parse_args(["drop=1e-3"]))
    assert spec.args == {"drop": 0.001} and isinstance(spec.args["drop"], float)
    assert [f.num_chs for f in spec.features][-1] == 16


# -- source encodings ------------------------------------------------------------------------
LATIN1_MODEL = (
    "# -*- coding: latin-1 -*-\n"
    '"""Modèle : un réseau à deux étapes."""\n'
    "from torch import nn\n\n\n"
    "class Reseau(nn.Module):\n"
    '    """Réseau."""\n\n'
    "    def __init__(self, in_chans: int = 3):\n"
    "        super().__init__()\n"
    '        self.nom = "été"\n'
    "        self.stem = nn.Conv2d(in_chans, 8, 3, 2, 1)\n"
    "        self.stage = nn.Conv2d(8, 16, 3, 2, 1)\n\n"
    "    def forward(self, x):\n"
    "        return self.stage(self.stem(x))\n"
)


def test_a_latin1_model_file_inspects(tmp_path: Path):
    path = tmp_path / "reseau.py"
    path.write_bytes(LATIN1_MODEL.encode("latin-1"))
    with pytest.raises(UnicodeDecodeError):
        path.read_text(encoding="utf-8")  # what the file is not
    assert [c.name for c in analyse_file(path).classes] == ["Reseau"]
    spec = analyse(str(path))
    assert spec.qualname == "Reseau" and spec.in_chans == 3
    assert [(f.num_chs, f.reduction) for f in spec.features][-1] == (16, 4)


def test_an_unknown_coding_cookie_is_named(tmp_path: Path):
    path = write(tmp_path / "odd.py", "# -*- coding: no-such-codec -*-\nx = 1\n")
    with pytest.raises(ScaffoldError, match=r"odd\.py: cannot read it \(unknown encoding"):
        analyse_file(path)


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("\ufb01net", r"Python reads this name as 'finet'; use that"),
        ("_", r"needs a letter after its underscores"),
        ("__", r"needs a letter after its underscores"),
        ("_1x", r"needs a letter after its underscores"),
    ],
)
def test_names_python_rewrites_or_that_name_no_class_are_refused(tmp_path, name, message):
    out = tmp_path / "out"
    with pytest.raises(ScaffoldError, match=message):
        generate(Options(target=str(MODELS / "cnn.py"), args={}, name=name, out=out))
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("resnet18", "'resnet18' is already a timm model"),
        ("counted", r"is the name of the model's own module \(counted\)"),
    ],
)
def test_a_taken_name_is_refused_before_the_model_is_built(tmp_path, monkeypatch, name, message):
    log = tmp_path / "constructions.txt"
    monkeypatch.setenv("SCAFFOLD_COUNT_FILE", str(log))
    with pytest.raises(ScaffoldError, match=message):
        generate(Options(target=str(COUNTED), args={}, name=name, out=tmp_path / "out"))
    assert not log.exists()  # refused before any analysis: the model was never constructed


def test_a_clash_with_the_default_output_folder_does_not_speak_of_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_net").mkdir()
    write(tmp_path / "my_net" / "notes.txt", "")
    with pytest.raises(ScaffoldError) as info:
        generate(Options(target=str(MODELS / "cnn.py"), args={}, name="my_net"))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'my_net'} (the default output folder; ")
    assert "not empty and not made by scaffold" in message
    assert (tmp_path / "my_net" / "notes.txt").read_text() == ""


# -- messages ------------------------------------------------------------------------------------
def test_a_forward_that_calls_cuda_is_said_to_need_a_gpu(tmp_path: Path):
    model = write(
        tmp_path / "gpunet.py",
        "from torch import nn\n\n\n"
        "class GpuNet(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.stem = nn.Conv2d(3, 8, 3, 2, 1)\n\n"
        "    def forward(self, x):\n"
        "        return self.stem(x.cuda())\n",
    )
    with pytest.raises(ScaffoldError) as info:
        analyse(str(model))
    message = str(info.value)
    assert message.startswith("GpuNet: forward needs a GPU (")
    assert "scaffold traces the model on the CPU or the meta device" in message
    assert "--input-shape" not in message


def test_a_directory_as_target_is_named_a_directory(tmp_path: Path):
    with pytest.raises(ScaffoldError, match=r": is a directory; name the model's file"):
        resolve_target(str(tmp_path))
    # With --name too, the target is looked at before the name (whose check imports TerraTorch).
    with pytest.raises(ScaffoldError, match=r"missing\.py: no such file"):
        generate(Options(target=str(tmp_path / "missing.py"), args={}, name="resnet18"))
    done = run_cli("inspect", str(MODELS))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {MODELS}: is a directory; name the model's file (path/to/model.py[:Name]) "
        "or its module (package.module:Name)"
    )


@pytest.mark.parametrize("text", ["3,1,1", "3,8,64", "6,4,15,15"])
def test_an_input_too_small_to_measure_reductions_is_refused(text):
    with pytest.raises(ScaffoldError, match=r"H and W must be at least 16"):
        parse_input_shape(text)
    assert parse_input_shape("3,16,16") == (3, 16, 16)


# -- help ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "usage", "example"),
    [
        ("inspect", "TARGET", "scaffold inspect model.py:Net --arg in_chans=6"),
        ("new-backbone", "TARGET", "scaffold new-backbone model.py:Net --arg in_chans=6"),
        ("verify", "[DIR]", "scaffold verify my_net --quick"),
        ("update", "[DIR]", "scaffold update my_net --dry-run"),
    ],
)
def test_help_shows_metavars_an_example_and_exit_codes(command, usage, example):
    env = clean_env() | {"COLUMNS": "100"}
    done = subprocess.run([SCAFFOLD, command, "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0
    text = done.stdout
    assert text.startswith(f"Usage: scaffold {command} [OPTIONS] {usage}\n")
    assert f"Example: {example}" in text
    assert re.search(r"Exit codes: 0 [^\n]*, 2 bad input", text)
    assert "{" not in text and "<list" not in text
    if command in ("inspect", "new-backbone"):
        assert "--arg NAME=VALUE" in text and "--input-shape C,H,W" in text
    if command == "new-backbone":
        assert "--task <segmentation|classification|regression>" in text
        assert "--name NAME" in text and "--out DIR" in text and "--weights FILE" in text


# -- copyable output ---------------------------------------------------------------------------
def test_log_paths_in_the_verification_table_are_printed_whole(tmp_path: Path):
    log = tmp_path / "a folder with spaces" / ("deep" * 12) / "iterate.log"
    report = VerifyReport(
        tmp_path,
        [
            Check("import", True, "fine", 0.1),
            Check("benchmark", False, f"no trial finished: ValueError: boom (log: {log})", 9.0),
        ],
    )
    buffer = io.StringIO()
    print_checks(Console(file=buffer, width=80), report)
    text = buffer.getvalue()
    assert "..." not in text and "…" not in text and "below)" in text
    lines = [line for line in text.splitlines() if line.startswith("log of benchmark: ")]
    assert len(lines) == 1
    assert shlex.split(lines[0].removeprefix("log of benchmark: ")) == [str(log)]


def readme_counts() -> dict[str, int]:
    """`benchmarks/README.md`'s table: command (after `scaffold`) -> constructions now."""
    text = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `scaffold ([^`]+)` \| (\d+) \| \d+ \|$", text, re.MULTILINE)
    return {re.sub(r" counted\.py:CountedCNN", "", cmd): int(n) for cmd, n in rows}


def constructions(log: Path) -> int:
    return len(log.read_text(encoding="utf-8").split()) if log.exists() else 0


def test_construction_counts_are_what_the_benchmark_readme_states(tmp_path, monkeypatch):
    stated = readme_counts()
    assert set(stated) == {"inspect", "new-backbone --no-verify", "new-backbone"}
    log = tmp_path / "inspect.txt"
    monkeypatch.setenv("SCAFFOLD_COUNT_FILE", str(log))
    analyse(str(COUNTED))
    assert constructions(log) == stated["inspect"]
    log = tmp_path / "no-verify.txt"
    monkeypatch.setenv("SCAFFOLD_COUNT_FILE", str(log))
    generate(Options(target=str(COUNTED), args={}, out=tmp_path / "gen"))
    assert constructions(log) == stated["new-backbone --no-verify"]


def test_new_backbone_prints_a_pasteable_command_and_builds_the_model_as_stated(tmp_path):
    """One real run, not on a terminal, 80 columns wide, into a folder whose path has spaces."""
    out = tmp_path / "my runs" / ("a long folder name " * 3).strip() / "counted out"
    log = tmp_path / "constructions.txt"
    env = clean_env() | {"COLUMNS": "80", "SCAFFOLD_COUNT_FILE": str(log)}
    done = subprocess.run(
        [SCAFFOLD, "new-backbone", str(COUNTED), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if "terratorch iterate" in line]
    assert len(lines) == 1
    # From the folder (the YAML's paths are relative to it), with MLflow's file store allowed.
    assert shlex.split(lines[0]) == [
        "cd",
        str(out),
        "&&",
        "MLFLOW_ALLOW_FILE_STORE=true",
        "terratorch",
        "iterate",
        "--hpo",
        "--config",
        "benchmark.yaml",
    ]
    assert constructions(log) == readme_counts()["new-backbone"]


# -- generated code ------------------------------------------------------------------------------
def test_generated_python_stays_within_88_columns(generated):
    dirs = [str(r.out) for r in generated.values()]
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache"]
        + ["--select", "E,W,F,I", "--line-length", "88", *dirs],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_header_keeps_a_long_model_path_whole(tmp_path: Path):
    from scaffold.render.backbone import LINE_LENGTH, generated_header

    target = f"{'/a folder' * 12}/model.py:Net"
    lines = generated_header(target).splitlines()
    assert lines[0].startswith("# Generated by scaffold") and "scaffold update" in lines[0]
    assert all(line.startswith("#") for line in lines)
    assert lines[-1] == f"# {target!r}  # noqa: E501"  # a path longer than any line: whole
    assert all(len(line) <= LINE_LENGTH for line in generated_header("m.py:Net").splitlines())


def test_temporal_frames_are_in_the_pretrained_cfg_and_num_frames_is_used(generated):
    result = generated["temporal"]
    registration = (result.package / "registration.py").read_text()
    assert "NUM_FRAMES" in registration
    assert "the project pins" not in (result.package / "backbone.py").read_text()
    # The package's __init__ would import TerraTorch (seconds): load it without running it.
    code = (
        "import importlib, importlib.util, sys, timm\n"
        f"pkg = {str(result.package)!r}\n"
        f"spec = importlib.util.spec_from_file_location({result.backbone!r}, pkg + "
        "'/__init__.py', submodule_search_locations=[pkg])\n"
        "sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
        "importlib.import_module(spec.name + '.registration')\n"
        "cfg = timm.models.get_pretrained_cfg(spec.name)\n"
        "print([list(cfg.input_size), list(cfg.notes)])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # timm's input_size is (C, H, W) (its builder asserts it); the frames are in the notes.
    assert list(result.input_shape[1:]) == [3, 6, 64, 64]
    assert yaml.safe_load(done.stdout) == [[3, 64, 64], ["input (C, T, H, W): (3, 6, 64, 64)"]]


def test_decoder_and_classes_are_said_once_in_the_task(generated):
    for layout in ("cnn", "vit"):
        config = yaml.safe_load(generated[layout].benchmark_config.read_text())
        defaults = config["defaults"]["terratorch_task"]["model_args"]
        assert "decoder" not in defaults and "num_classes" not in defaults
        for task in config["tasks"]:
            model_args = task["terratorch_task"]["model_args"]
            assert model_args["decoder"] == "UperNetDecoder" and model_args["num_classes"] == 2
