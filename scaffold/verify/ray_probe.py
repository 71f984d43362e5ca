"""The Ray side of the ``ray`` check, run as ``python -m scaffold.verify.ray_probe`` (a process
of its own, so that verify's other checks go on while Ray starts and its worker imports TerraTorch).

The process reads one JSON object on stdin (``package``, ``backbone``, ``kwargs``, ``ray_dir``,
``answer``), starts a one-CPU local Ray instance, runs `probe` as a Ray task and writes the task's
answer as JSON to the file ``answer`` (its output and Ray's go to a log). Its working directory is an empty folder: Ray adds the driver's working directory to
every worker's ``sys.path``, and an empty one proves nothing. The folder of the generated package
comes on ``PYTHONPATH``, as ``pip install -e DIR`` would put it, and the worker inherits it.
SIGTERM shuts Ray down before the process ends; the process leads a process group of its own,
which Ray's processes join, and the check ends that group when it closes.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import warnings
from typing import Any

from scaffold.errors import one_line

OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's minimum is 75 MiB; the task returns a few ints


def probe(package: str, backbone: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Runs in the Ray worker: what each trial of the Ray route does before it trains."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(package)
    except Exception as exc:
        return {"stage": "import", "error": one_line(exc)}
    try:
        from terratorch.registry import BACKBONE_REGISTRY

        model = BACKBONE_REGISTRY.build(backbone, **kwargs)
        channels = [int(c) for c in model.out_channels]
    except Exception as exc:
        return {"stage": "build", "error": one_line(exc)}
    return {"file": str(module.__file__), "cwd": os.getcwd(), "out_channels": channels}


def main() -> int:
    request = json.loads(sys.stdin.read())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds to ray.shutdown()
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        ray.init(
            address="local",
            num_cpus=1,
            num_gpus=0,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            _temp_dir=request["ray_dir"],
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
        task = ray.remote(num_cpus=1, max_retries=0)(probe)
        ref = task.remote(request["package"], request["backbone"], request["kwargs"])
        try:
            answer = ray.get(ref)
        except ray.exceptions.RayError as exc:
            answer = {"stage": "ray", "error": one_line(exc)}
    finally:
        ray.shutdown()
    with open(request["answer"], "w", encoding="utf-8") as file:
        json.dump(answer, file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
