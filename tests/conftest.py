"""Shared helpers: paths, running the real `scaffold` command, generating backbones once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).resolve().parent / "models"
SWIN3D = ROOT / "examples" / "swin3d" / "swin3d.py"
BIN = Path(sys.executable).parent
SCAFFOLD = str(BIN / "scaffold")


if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers share the cores: a thread each
    import torch

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def clean_env() -> dict[str, str]:
    """The environment of a fresh shell: nothing of MLflow's set."""
    return clean_env_of(os.environ)


def clean_env_of(environ) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if not k.startswith(("MLFLOW_", "PL_"))}
    env.pop("PYTHONPATH", None)
    return env


def run_fresh(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` in a fresh process with a fresh shell's environment; capture its output."""
    return subprocess.run(
        cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=600
    )


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `scaffold ARGS` as a person would: the real command line, in this process (the stack
    is imported once per test session, not once per command), with a fresh shell's environment,
    `cwd` as the working directory and file descriptors 1 and 2 captured, as a subprocess would
    see them. `run_cli_fresh` runs it in a fresh process, for what only a fresh process shows."""
    return _run_in_process(["scaffold", *args], cwd)


def run_cli_fresh(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `scaffold ARGS` in a fresh process (start-up, imports, signals, a new interpreter)."""
    return run_fresh([SCAFFOLD, *args], cwd=cwd)


def _run_in_process(argv: list[str], cwd: Path | None) -> subprocess.CompletedProcess:
    from scaffold import cli

    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    saved_modules, saved_path = set(sys.modules), list(sys.path)
    saved_streams = sys.stdout, sys.stderr
    files = [tempfile.TemporaryFile(mode="w+b") for _ in range(2)]  # noqa: SIM115
    for stream in saved_streams:
        stream.flush()
    saved_fds = [os.dup(1), os.dup(2)]
    code = 0
    try:
        os.environ.clear()
        os.environ.update(clean_env_of(saved_env))
        sys.argv = argv
        if cwd is not None:
            os.chdir(cwd)
        for fd, file in zip((1, 2), files, strict=True):
            os.dup2(file.fileno(), fd)
        # Streams on the redirected descriptors, never closed: a logging handler that keeps one
        # writes into a finished run's file rather than into a closed stream.
        sys.stdout = open(os.dup(1), "w", encoding="utf-8", buffering=1, closefd=True)  # noqa: SIM115
        sys.stderr = open(os.dup(2), "w", encoding="utf-8", buffering=1, closefd=True)  # noqa: SIM115
        cli._console.cache_clear()  # rich consoles made for the new streams
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), saved_fds, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        sys.stdout, sys.stderr = saved_streams
        cli._console.cache_clear()
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
        _forget_imported(set(sys.modules) - saved_modules)
    out, err = (_read(file) for file in files)
    return subprocess.CompletedProcess(argv, code, out, err)


def _forget_imported(added: set[str]) -> None:
    """What a fresh process would not carry into the next command: the modules a run imported
    from outside the environment (the person's model, a generated package) and the names
    those registered with timm and TerraTorch. The installed libraries stay imported."""
    # Installed libraries: the environment's prefixes and every site-packages folder on the
    # path (a virtual environment layered over another one reaches the other's through a .pth).
    sites = tuple(p for p in sys.path if Path(p).name in ("site-packages", "dist-packages"))
    keep = (sys.prefix, sys.base_prefix, *sites, str(ROOT / "scaffold"), str(ROOT / "templates"))
    gone = {
        name
        for name in added
        if (file := getattr(sys.modules.get(name), "__file__", None)) is not None
        and not str(Path(file).resolve()).startswith(keep)
    }
    for name in gone:
        del sys.modules[name]
    if "timm.models._registry" in sys.modules:
        from timm.models import _registry as timm_registry

        models = {
            model
            for model, entry in timm_registry._model_entrypoints.items()
            if getattr(entry, "__module__", None) in gone
        }
        for table in (
            timm_registry._model_entrypoints,
            timm_registry._model_to_module,
            timm_registry._model_default_cfgs,
            timm_registry._model_with_tags,
            timm_registry._deprecated_models,
        ):
            for model in models & set(table):
                del table[model]
        timm_registry._model_has_pretrained.difference_update(models)
        for tag in [t for t in timm_registry._model_pretrained_cfgs if t.split(".")[0] in models]:
            del timm_registry._model_pretrained_cfgs[tag]
        for names in timm_registry._module_to_models.values():  # keyed by the last part
            names.difference_update(models)
    if "terratorch.registry" in sys.modules:
        from terratorch.registry import MODEL_FACTORY_REGISTRY, TERRATORCH_BACKBONE_REGISTRY

        for registry in (MODEL_FACTORY_REGISTRY, TERRATORCH_BACKBONE_REGISTRY):
            table = registry._registry
            for key in [k for k, v in table.items() if getattr(v, "__module__", None) in gone]:
                del table[key]


@pytest.fixture(autouse=True)
def _forget_what_a_test_imported():
    """Each test starts as a fresh process would: a backbone package a test imported itself (to
    build a generated backbone through timm) leaves neither its modules, its folder on sys.path
    nor its timm and TerraTorch names behind, so a later test's default name is free again."""
    before, path = set(sys.modules), list(sys.path)
    yield
    sys.path[:] = path  # a folder a test put on the path would hide a later default name
    _forget_imported(set(sys.modules) - before)


def _read(file) -> str:
    file.seek(0)
    text = file.read().decode("utf-8", errors="replace")
    file.close()
    return text


def run_json(*args: str, cwd: Path | None = None, fresh: bool = False) -> tuple[int, dict]:
    done = (run_cli_fresh if fresh else run_cli)(*args, "--json", cwd=cwd)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def generated_backbone(out: Path, name: str, **kwargs: Any) -> Any:
    """The backbone a generated package in `out` registers as `name`, built by timm in eval
    mode (the package is imported from `out`, as a person's script would)."""
    import importlib

    import timm

    sys.path.insert(0, str(out))
    try:
        importlib.import_module(name)  # registers the backbone
        return timm.create_model(name, **kwargs).eval()
    finally:
        sys.path.remove(str(out))


def model_class(module: str, name: str) -> Any:
    """A class of tests/models/MODULE.py: the truth a generated backbone is compared with."""
    import importlib

    sys.path.insert(0, str(MODELS))
    try:
        return getattr(importlib.import_module(module), name)
    finally:
        sys.path.remove(str(MODELS))


def copy_model(name: str, dest: Path, new_name: str | None = None) -> Path:
    """A copy of tests/models/NAME.py under `dest` (edits then stay out of the repository)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{new_name or name}.py"
    shutil.copyfile(MODELS / f"{name}.py", target)
    return target


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """Backbones generated (not verified) in-process once per session: layout -> output dir."""
    from scaffold.pipeline.new_backbone import Options, generate

    root = tmp_path_factory.mktemp("generated")
    targets = {
        "cnn": str(MODELS / "cnn.py"),
        "vit": str(MODELS / "vit.py"),
        "channels_last": str(MODELS / "channels_last.py"),
        "temporal": str(MODELS / "temporal.py"),
        "dict_out": str(MODELS / "dict_out.py"),
        "list_out": str(MODELS / "list_out.py"),
        "tokens": str(MODELS / "tokens.py"),
        "swin3d": str(SWIN3D),
    }
    return {
        layout: generate(Options(target=target, args={}, out=root / layout))
        for layout, target in targets.items()
    }
