"""terratorch-iterate's current ``iterate`` (iterate2): a trial script and an HPO YAML per task.

iterate2 (the ``iterate`` console script of terratorch-iterate 0.4,
``terratorch_iterate.iterate2._iterate2``) is a minimal Optuna launcher: for each trial it
runs ``--script`` as an executable, with every sampled and static parameter of its HPO YAML
in the environment (``ITERATE_PARAM_<NAME>``), captures the script's stdout and stderr
into ``trial_N.out`` / ``trial_N.err`` in the folder it was started in, and takes the last
``NAME: VALUE`` of each metric from them. It maximises every metric, records 0.0 with only
a warning when a metric is not found, and marks a trial whose script exits non-zero as
failed (and carries on). Where the trial runs is the script's business. So scaffold writes,
from the rendered ``benchmark.yaml``:

- ``iterate2/trial.py``, shared by all tasks, executable: one trial of one task, built as
  ``fit/<task>.yaml`` is (the same `fit_config`, which the script loads from the package's
  runtime copy, so that a node needs TerraTorch and the backbone's package, not scaffold), printing the metric under a
  name iterate2 maximises rightly (``neg_val_loss`` for a min-direction ``val/loss``) and
  printing none when training fails; with ``TRIAL_LAUNCHER`` set (``srun ...``,
  ``bsub -I ...``) it runs itself on a cluster node through that command;
- ``iterate2/<task>.yaml``: iterate2's HPO YAML (``metrics``, ``static``, ``hpo``) from the
  task and ``optimization_space``.

It also derives the commands that run them (on this machine, through Slurm or LSF).
`scaffold update` keeps the files in step like any generated file.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from scaffold.errors import ScaffoldError
from scaffold.render import fit
from scaffold.render.dump import dump
from scaffold.runtime.configs import plain_choices, printed_name, search_space
from scaffold.write.names import (
    CONFIG_FILE,
    ITERATE2_DIR,
    ITERATE2_RUNS,
    ITERATE2_STORAGE_FILE,
    TRIAL_SCRIPT,
    hpo_config_file,
    iterate2_workdir,
)

TEMPLATE = "iterate2/trial.py.jinja"  # in scaffold.templates
LAUNCHER_VARIABLE = "TRIAL_LAUNCHER"  # as trial.py reads it
# What one trial asks a cluster for.
GPUS, CPUS, MEM_GB = 1, 8, 32
LAUNCHERS = {
    "slurm": f"srun --gres=gpu:{GPUS} --cpus-per-task={CPUS} --mem={MEM_GB}G",
    "lsf": f'bsub -I -gpu num={GPUS} -n {CPUS} -R "rusage[mem={MEM_GB}GB]"',
}


# -- the HPO YAML ----------------------------------------------------------------------------------
def hpo_entry(leaf: Any) -> dict[str, Any]:
    """iterate2's spec of one searched entry."""
    if isinstance(leaf, list):
        if plain_choices(leaf):
            return {"type": "categorical", "choices": list(leaf)}
        return {"type": "categorical", "choices": list(range(len(leaf)))}
    kind = "int" if str(leaf.get("type", "real")) == "int" else "float"
    entry: dict[str, Any] = {"type": kind, "low": leaf["min"], "high": leaf["max"]}
    if leaf.get("log"):
        entry["log"] = True
    return entry


def hpo_config(main: dict[str, Any], task: dict[str, Any], out: Path) -> dict[str, Any]:
    """iterate2's HPO YAML of `task` (the benchmark config `main` in the output folder `out`)."""
    metric = str(task.get("metric", "val/loss"))
    direction = str(task.get("direction", "max"))
    return {
        "metrics": [printed_name(metric, direction)],
        # Relative: trial.py reads it in the output folder, wherever that is.
        "static": {"config": CONFIG_FILE, "task": str(task["name"])},
        "hpo": {name: hpo_entry(leaf) for name, leaf in search_space(main, task).items()},
    }


def hpo_texts(main_text: str, out: Path, header: str) -> dict[str, bytes]:
    """``{"iterate2/<task>.yaml": content}`` for each task of the benchmark config's text."""
    main, tasks = fit.benchmark_tasks(main_text)
    texts: dict[str, bytes] = {}
    for task in tasks:
        name = str(task["name"])
        config = hpo_config(main, task, out)
        comment = (
            f"{header}\n"
            f"# iterate2's search of the benchmark's task `{name}`: each trial runs\n"
            f"#   python {TRIAL_SCRIPT} --config benchmark.yaml --task {name} --lr ...\n"
            f"# which prints {config['metrics'][0]} (iterate2 maximises every metric).\n"
            "# From benchmark.yaml's optimization_space; choices iterate2 cannot pass as they are\n"
            "# go by position (0, 1, ...). Run it with the command `scaffold new-backbone` printed.\n"
        )
        texts[hpo_config_file(name)] = (comment + dump(config) + "\n").encode()
    return texts


def is_hpo_file(rel: str) -> bool:
    """Whether `rel` (relative to DIR) is one of the HPO YAMLs derived from benchmark.yaml."""
    return rel.startswith(f"{ITERATE2_DIR}/") and rel.endswith(".yaml")


def trial_script_text(header: str, package: str) -> str:
    """The trial script (unformatted: the renderer formats the generated Python); it loads the
    functions it shares with scaffold from the runtime copy of `package`."""
    from importlib import resources

    import jinja2

    template = resources.files("scaffold.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")
    text: str = jinja2.Template(template, keep_trailing_newline=True).render(
        header=header, package=repr(package)
    )
    return text


def write_iterate2(dest: Path, out: Path, header: str, package: str) -> list[str]:
    """Write the trial script and each task's HPO YAML into the rendered folder `dest` (the
    output folder will be `out`) from its benchmark.yaml; return the files written (relative)."""
    texts = hpo_texts((dest / CONFIG_FILE).read_text(encoding="utf-8"), out, header)
    texts[TRIAL_SCRIPT] = trial_script_text(header, package).encode()
    for rel, content in texts.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (dest / TRIAL_SCRIPT).chmod(0o755)  # iterate2 runs it as an executable
    return sorted(texts)


# -- the commands --------------------------------------------------------------------------
def iterate_program() -> str:
    """The ``iterate`` console script beside this Python, else the name on PATH."""
    beside = Path(sys.executable).parent / "iterate"
    return str(beside) if beside.is_file() else "iterate"


def study_name(main: dict[str, Any], task: str) -> str:
    return f"{main.get('experiment_name', 'benchmark')}-{task}"


def storage(out: Path) -> str:
    """One Optuna storage for all tasks (a study each), written by the launcher only."""
    return f"sqlite:///{out / ITERATE2_RUNS / ITERATE2_STORAGE_FILE}"


def command(out: Path, main: dict[str, Any], task: str, program: str | None = None) -> list[str]:
    """iterate2's argv for `task` (`program`: the ``iterate`` to run)."""
    return [
        program or iterate_program(),
        "--script", str(out / TRIAL_SCRIPT),
        "--hpo-yaml", str(out / hpo_config_file(task)),
        "--optuna-study-name", study_name(main, task),
        "--optuna-db-path", storage(out),
        "--optuna-n-trials", str(main.get("n_trials") or 1),
    ]  # fmt: skip


def task_names(out: Path) -> tuple[dict[str, Any], list[str]]:
    """benchmark.yaml's mapping and the tasks of it that have an HPO YAML in `out` (none
    when `out` has no trial script)."""
    if not (out / TRIAL_SCRIPT).is_file():
        return {}, []
    try:
        main, tasks = fit.benchmark_tasks((out / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ScaffoldError):
        return {}, []
    names = [str(t["name"]) for t in tasks if (out / hpo_config_file(str(t["name"]))).is_file()]
    return main, names


def commands(out: Path) -> list[list[str]]:
    """One argv per task for a run on this machine (started in `workdirs`)."""
    main, names = task_names(out)
    return [command(out, main, name) for name in names]


def workdirs(out: Path) -> list[str]:
    """Where each of `commands` is started: iterate2 writes each trial's output there."""
    _, names = task_names(out)
    return [str(out / iterate2_workdir(name)) for name in names]


def shell_lines(out: Path, wlm: str | None = None) -> list[str]:
    """The commands as a person pastes them, each started in its task's working folder: on
    this machine, or (`wlm` "slurm" or "lsf") with every trial run on a cluster node."""
    main, names = task_names(out)
    lines = []
    for name in names:
        where = shlex.quote(str(out / iterate2_workdir(name)))
        prefix = ""
        if wlm is not None:
            prefix = f"{LAUNCHER_VARIABLE}={shlex.quote(LAUNCHERS[wlm])} "
        program = "iterate" if wlm else None
        argv = shlex.join(command(out, main, name, program))
        lines.append(f"mkdir -p {where} && cd {where} && {prefix}{argv}")
    return lines


def summary(out: Path) -> dict[str, Any]:
    """What ``--json`` says of iterate2: an argv per task for a run on this machine, and the
    folder each is started in (iterate2 writes each trial's output there)."""
    return {"iterate2_commands": commands(out), "iterate2_workdirs": workdirs(out)}
