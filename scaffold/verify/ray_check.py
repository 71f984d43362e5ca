"""The ``ray`` rung: the Ray route's config, and the package as a Ray worker sees it.

1. ``benchmark_ray.yaml`` parses with terratorch-iterate's own Ray CLI parser (the jsonargparse
   parser that ``python -m terratorch_iterate.benchmark_ray`` builds; nothing runs), and its
   ``tmp_dir`` leaves Ray room for its Unix sockets.
2. A local Ray instance with one CPU runs one task in a worker process that works in another
   directory (an empty temporary one): it imports ``backbone_import`` by name, builds the
   config's backbone through TerraTorch's BACKBONE_REGISTRY and returns its ``out_channels``,
   which must be the channels of the backbone's feature_info. That is what every trial of the Ray
   route does first, on every node.

The worker finds the package as an installed one would be found: DIR is on its PYTHONPATH (what
``pip install -e DIR`` does), and the driver starts Ray from the temporary directory, so that
Ray's habit of adding the driver's working directory to the workers' path proves nothing.
Ray is imported here only, and shut down before the check returns.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scaffold.errors import one_line
from scaffold.ray_route import (
    RAY_CONFIG_FILE,
    SOCKET_PATH_MAX,
    TRIAL_RESOURCES,
    ray_socket_example,
    ray_sockets_fit,
)
from scaffold.verify import CheckFailed, read_config

WORKER_TIMEOUT_S = 300
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's minimum is 75 MiB; the task returns a few ints


def check_ray(context) -> str:
    """The ``ray`` check for the Context of a generated folder (see scaffold.verify.checks)."""
    directory: Path = context.directory
    config_path = directory / RAY_CONFIG_FILE
    raw = read_config(config_path)
    package = raw.get("backbone_import")
    if not package or not isinstance(package, str):
        raise CheckFailed(f"{config_path.name}: backbone_import is not set to a module name")
    tmp_dir = raw.get("tmp_dir")
    if not tmp_dir:
        raise CheckFailed(f"{config_path.name}: tmp_dir is not set (the Ray route requires it)")
    if not ray_sockets_fit(str(tmp_dir)):
        socket = ray_socket_example(str(tmp_dir))
        raise CheckFailed(
            f"{config_path.name}: tmp_dir {tmp_dir} is too long for Ray: its sockets "
            f"({len(socket.encode())} bytes, e.g. {socket}) would pass the {SOCKET_PATH_MAX}-byte "
            "limit of Unix socket paths; set a shorter tmp_dir"
        )
    if raw.get("optimization_space") and not raw.get("ray_storage_path"):
        raise CheckFailed(f"{config_path.name}: optimization_space needs ray_storage_path")
    model_args = _model_args(raw)
    backbone = model_args.get("backbone")
    if not isinstance(backbone, str):
        raise CheckFailed(
            f"{config_path.name}: defaults.terratorch_task.model_args.backbone is not a name"
        )
    kwargs = {}
    if "backbone_in_chans" in model_args:
        kwargs["in_chans"] = model_args["backbone_in_chans"]
    if "backbone_out_indices" in model_args:
        kwargs["out_indices"] = model_args["backbone_out_indices"]
    expected = _expected_channels(context.state.spec, kwargs.get("out_indices"))

    # The worker imports TerraTorch (seconds): iterate's parser is built and run meanwhile.
    with ray_task(package, backbone, kwargs, directory) as result:
        _, resources = parse_ray_config(config_path)
        found = result()
    if "error" in found:
        what = (
            f"import '{package}'"
            if found["stage"] == "import"
            else f"build '{backbone}' through BACKBONE_REGISTRY"
        )
        raise CheckFailed(f"a Ray worker could not {what}: {found['error']}")
    imported = Path(found["file"]).resolve()
    if not imported.is_relative_to(directory / package):
        raise CheckFailed(
            f"a Ray worker imported '{package}' from {imported}, not from {directory}: "
            "another copy is installed; reinstall this folder (pip install -e)"
        )
    if found["out_channels"] != expected:
        raise CheckFailed(
            f"in a Ray worker '{backbone}' has out_channels {found['out_channels']}, "
            f"feature_info says {expected}"
        )
    cpus, gpus = resources.get("num_cpus"), resources.get("num_gpus")
    return (
        f"{config_path.name} parses with terratorch-iterate's Ray CLI; a Ray worker in another "
        f"directory imported '{package}' and built '{backbone}': out_channels "
        f"{found['out_channels']} as feature_info; each trial asks {cpus} CPUs and {gpus} GPU"
    )


def parse_ray_config(config_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse with the parser ``python -m terratorch_iterate.benchmark_ray`` builds (jsonargparse's
    CLI over ``benchmark_backbone``), captured instead of run. Returns the parsed values and the
    resources iterate asks per trial."""
    from jsonargparse import capture_parser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notes from optuna, mlflow, ray
        module = importlib.import_module("terratorch_iterate.benchmark_ray")
    parser = capture_parser(module.main)
    parser.exit_on_error = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            namespace = parser.parse_args(["--config", str(config_path)])
    except Exception as exc:
        raise CheckFailed(
            f"terratorch-iterate's Ray CLI rejects {config_path.name}: {one_line(exc)}"
        ) from exc
    parsed = namespace.as_dict()
    parsed.pop("config", None)
    remote_fit = getattr(module, "remote_fit", None)
    options = dict(getattr(remote_fit, "_default_options", None) or {})
    resources = {
        "num_cpus": options.get("num_cpus", TRIAL_RESOURCES["CPU"]),
        "num_gpus": options.get("num_gpus", TRIAL_RESOURCES["GPU"]),
    }
    return parsed, resources


@contextlib.contextmanager
def ray_task(
    package: str, backbone: str, kwargs: dict[str, Any], directory: Path
) -> Iterator[Callable[[], dict[str, Any]]]:
    """Start a one-CPU local Ray instance and submit `_probe`; yield a function that waits for
    its answer. Ray is shut down, and its temporary folder removed, when the block ends."""
    import ray

    scratch = Path(tempfile.mkdtemp(prefix="scaffold-ray-"))
    workdir = scratch / "work"
    workdir.mkdir()
    path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH")) if p)
    try:
        # Ray adds the driver's working directory to every worker's sys.path: start it elsewhere.
        with contextlib.chdir(workdir), _env(RAY_USAGE_STATS_ENABLED="0"):
            ray.init(
                address="local",
                num_cpus=1,
                num_gpus=0,
                include_dashboard=False,
                object_store_memory=OBJECT_STORE_BYTES,
                _temp_dir=str(scratch / "ray"),
                runtime_env={"env_vars": {"PYTHONPATH": path}},
                logging_level="ERROR",
                log_to_driver=False,
            )
        try:
            probe = ray.remote(num_cpus=1, max_retries=0)(_probe)
            ref = probe.remote(package, backbone, kwargs, str(workdir))

            def result() -> dict[str, Any]:
                try:
                    return ray.get(ref, timeout=WORKER_TIMEOUT_S)
                except ray.exceptions.GetTimeoutError as exc:
                    raise CheckFailed(
                        f"the Ray worker did not answer in {WORKER_TIMEOUT_S} s"
                    ) from exc
                except ray.exceptions.RayError as exc:
                    raise CheckFailed(f"the Ray worker failed: {one_line(exc)}") from exc

            yield result
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _probe(package: str, backbone: str, kwargs: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Runs in the Ray worker: what each trial of the Ray route does before it trains."""
    os.chdir(workdir)
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


def _model_args(parsed: dict[str, Any]) -> dict[str, Any]:
    defaults = parsed.get("defaults") or {}
    task = defaults.get("terratorch_task") or {}
    return dict(task.get("model_args") or {})


def _expected_channels(spec, out_indices: Any) -> list[int]:
    """feature_info's channels: the spec's measured features, at the config's out_indices."""
    if out_indices is None:
        return [f.num_chs for f in spec.selected]
    count = len(spec.features)
    if isinstance(out_indices, int):
        indices = list(range(count - out_indices, count))
    else:
        indices = [i % count for i in out_indices]
    return [spec.features[i].num_chs for i in indices]


@contextlib.contextmanager
def _env(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
