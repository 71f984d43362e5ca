"""``fit/<task>.yaml``: one configuration of each benchmark task for TerraTorch's own CLI.

terratorch-iterate runs each trial on one device. Training one configuration on several GPUs or
nodes goes through ``terratorch fit --config fit/<task>.yaml`` (LightningCLI), with Lightning's
strategies given on the command line (``--trainer.devices 8 --trainer.strategy ddp``). Each file is
*derived* from the rendered ``benchmark.yaml``, so the two say the same: the trainer is
``defaults.trainer_args``; the model is the task class iterate builds for the task's ``type``,
with ``defaults.terratorch_task`` and the task's own merged key by key (as iterate merges them);
the data is the task's datamodule; each searched hyperparameter (``optimization_space``) takes its
middle value (the first of a list, the geometric middle of a log range). `scaffold update` keeps
the files in step like any generated file.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from scaffold.errors import ScaffoldError
from scaffold.render.dump import dump
from scaffold.runtime import configs
from scaffold.runtime.configs import NO_PLOTS, SEED, TASK_CLASSES, merge, middle
from scaffold.write.names import CONFIG_FILE, fit_config_file

# The functions shared with iterate2's trial script live in scaffold's runtime, which each package
# carries: the trial loads them from there.
__all__ = ["NO_PLOTS", "SEED", "TASK_CLASSES", "fit_config", "merge", "middle"]


def fit_config(
    main: dict[str, Any],
    task: dict[str, Any],
    out: Path,
    space: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The runtime's fit_config (see scaffold/runtime/configs.py); a problem in the config is a
    ScaffoldError."""
    try:
        return configs.fit_config(main, task, out, space)
    except configs.ConfigError as exc:
        raise ScaffoldError(str(exc)) from exc


def benchmark_tasks(main_text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The benchmark config's mapping and its tasks (those with a name)."""
    try:
        main = yaml.safe_load(main_text)
    except yaml.YAMLError as exc:
        raise ScaffoldError(f"benchmark.yaml: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(main, dict):
        raise ScaffoldError("benchmark.yaml: not a YAML mapping")
    tasks = [t for t in main.get("tasks") or [] if isinstance(t, dict) and "name" in t]
    return main, tasks


def fit_texts(main_text: str, out: Path, header: str) -> dict[str, bytes]:
    """``{"fit/<task>.yaml": content}`` for each task of the benchmark config's text."""
    main, tasks = benchmark_tasks(main_text)
    texts: dict[str, bytes] = {}
    for task in tasks:
        rel = fit_config_file(str(task["name"]))
        body = dump(fit_config(main, task, out)) + "\n"
        where = shlex.quote(str(out / rel))
        comment = (
            f"{header}\n"
            f"# The benchmark's task `{task['name']}` as one configuration for TerraTorch's CLI:\n"
            f"#   terratorch fit --config {where}\n"
            "# On several GPUs or nodes, with Lightning's strategies:\n"
            f"#   terratorch fit --config {where} --trainer.devices 8 --trainer.strategy ddp\n"
            "# From benchmark.yaml: trainer_args, the task's terratorch_task over the defaults,\n"
            "# its datamodule; each searched hyperparameter at the middle of its range.\n"
        )
        texts[rel] = (comment + body).encode()
    return texts


def write_fit_configs(dest: Path, out: Path, header: str) -> list[str]:
    """Write ``fit/<task>.yaml`` into the rendered folder `dest` (the output folder will be
    `out`) from its benchmark.yaml; return the files written (relative)."""

    texts = fit_texts((dest / CONFIG_FILE).read_text(encoding="utf-8"), out, header)
    for rel, content in texts.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return sorted(texts)
