"""Train the first task of a benchmark YAML for a few steps under Lightning's DDP on the CPU.

    python tests/train_ddp.py BENCHMARK_YAML STEPS

The model is built as terratorch-iterate builds a trial's: the task class for the task's `type`,
with `defaults.terratorch_task` and the task's own merged key by key, over the package that
`custom_modules_path` names; the datamodule is the task's. Two processes (gloo), strategy="ddp"
(find_unused_parameters=False): a trainable parameter without a gradient stops it at the second
step. Rank 0 prints ``global_step N`` at the end. Lightning starts rank 1 by running this command
line again, which is why this is a script and not a test function.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import yaml

from scaffold.render.fit import merge  # the merge iterate applies, as the fit configs use it


def main() -> None:
    config = yaml.safe_load(Path(sys.argv[1]).read_text())
    steps = int(sys.argv[2])
    package = Path(config["custom_modules_path"]).absolute()  # relative: run from its folder
    sys.path.insert(0, str(package.parent))
    importlib.import_module(package.name)

    import lightning.pytorch as pl
    from terratorch_iterate.benchmark_types import TaskTypeEnum

    task = config["tasks"][0]
    terratorch_task = merge(config["defaults"]["terratorch_task"], task["terratorch_task"])
    if task["type"] in ("segmentation", "regression"):
        terratorch_task["plot_on_val"] = False  # as iterate does
    module = TaskTypeEnum(task["type"]).get_class_from_enum()(**terratorch_task)
    data = task["datamodule"]
    where, _, name = data["class_path"].rpartition(".")
    datamodule = getattr(importlib.import_module(where), name)(
        **{**data["init_args"], "batch_size": 2}  # a decoder's BatchNorm on pooled maps needs 2
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=steps,
        max_epochs=steps,  # an epoch of 8 samples is 2 steps on each of the 2 processes
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(Path(sys.argv[1]).parent / "runs" / "ddp"),
    )
    trainer.fit(module, datamodule)
    if trainer.global_rank == 0:
        print(f"global_step {trainer.global_step}", flush=True)


if __name__ == "__main__":
    main()
