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
    """``{"fit/<task>.yaml": content}`` for each task of the benchmark config's text (of the
    folder `out`; the files name paths in it relative to it, wherever it is)."""
    main, tasks = benchmark_tasks(main_text)
    texts: dict[str, bytes] = {}
    for task in tasks:
        rel = fit_config_file(str(task["name"]))
        # Paths relative to the output folder, as in benchmark.yaml: run from there.
        body = dump(fit_config(main, task, Path())) + "\n"
        where = shlex.quote(rel)
        comment = (
            f"{header}\n"
            f"# The benchmark's task `{task['name']}` as one configuration for TerraTorch's CLI,\n"
            "# run from the folder of benchmark.yaml (its paths are relative to that folder):\n"
            f"#   terratorch fit --config {where}\n"
            "# On several GPUs or nodes, with Lightning's strategies:\n"
            f"#   terratorch fit --config {where} --trainer.devices 8 --trainer.strategy ddp\n"
            "# From benchmark.yaml: trainer_args, the task's terratorch_task over the defaults,\n"
            "# its datamodule; each searched hyperparameter at the middle of its range.\n"
        )
        texts[rel] = (comment + body).encode()
    seeds = main.get("run_repetitions")
    if tasks and isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0:
        names = [str(t["name"]) for t in tasks]
        texts[SEEDS_SCRIPT] = seeds_script(names, seeds, header).encode()
    return texts


SEEDS_SCRIPT = "fit/seeds.sh"


def seeds_script(tasks: list[str], seeds: int, header: str) -> str:
    """``fit/seeds.sh``: every task with the fixed seeds 0..`seeds`-1 (benchmark.yaml's
    ``run_repetitions``), `terratorch fit` then `terratorch test` on its last checkpoint. Each
    run's folder ``runs/fit/<task>/seed_<S>`` records its task, track (``<task>_frozen``) and
    seed; Lightning saves the configuration it ran (``config.yaml``) there, and the test
    metrics go to ``test/metrics.csv`` beside it (what `scaffold report` reads)."""
    lines = [
        "#!/usr/bin/env bash",
        header,
        f"# Every task of benchmark.yaml with the fixed seeds 0..{seeds - 1}: fit, then test.",
        "# From the folder above fit/:",
        "#   on one machine, one run after the other:  bash fit/seeds.sh",
        "#   one run (task x seed) by its index:        bash fit/seeds.sh 3",
        (
            f"#   a Slurm job array, a run per job:          sbatch --array=0-{len(tasks) * seeds - 1} "
            "fit/seeds.sh"
        ),
        "set -euo pipefail",
        "# Run from the folder it sits in (Slurm runs a copy of it: then from where sbatch ran).",
        'cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"',
        f"TASKS=({' '.join(shlex.quote(t) for t in tasks)})",
        f"SEEDS={seeds}",
        "run() {",
        "  local task=${TASKS[$(($1 / SEEDS))]} seed=$(($1 % SEEDS))",
        '  local dir="runs/fit/$task/seed_$seed"',
        '  terratorch fit --config "fit/$task.yaml" --seed_everything "$seed" \\',
        '    --trainer.default_root_dir "$dir"',
        '  local ckpt; ckpt=$(find "$dir" -name "*.ckpt" | sort | tail -n 1)',
        '  terratorch test --config "fit/$task.yaml" --seed_everything "$seed" \\',
        '    --ckpt_path "$ckpt" --trainer.default_root_dir "$dir" \\',
        "    --trainer.logger lightning.pytorch.loggers.CSVLogger \\",
        '    --trainer.logger.init_args.save_dir "$dir" --trainer.logger.init_args.name "" \\',
        "    --trainer.logger.init_args.version test",
        "}",
        "INDEX=${1:-${SLURM_ARRAY_TASK_ID:-}}",
        'if [ -n "$INDEX" ]; then run "$INDEX"; exit; fi',
        'for ((i = 0; i < ${#TASKS[@]} * SEEDS; i++)); do run "$i"; done',
    ]
    return "\n".join(lines) + "\n"


def write_fit_configs(dest: Path, out: Path, header: str) -> list[str]:
    """Write ``fit/<task>.yaml`` into the rendered folder `dest` (the output folder will be
    `out`) from its benchmark.yaml; return the files written (relative)."""

    texts = fit_texts((dest / CONFIG_FILE).read_text(encoding="utf-8"), out, header)
    for rel, content in texts.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        if rel == SEEDS_SCRIPT:
            path.chmod(0o755)
    return sorted(texts)
