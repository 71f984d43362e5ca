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
``pip install -e DIR`` does), and Ray's driver is a process of its own
(``scaffold.verify.ray_probe``) started in an empty directory, so that Ray's habit of adding the
driver's working directory to the workers' path proves nothing. Most of the check's time is Ray's
start-up and the worker's import of TerraTorch: verify starts the probe before its other checks
(`start_probe`) and collects the answer at this rung, so that time passes alongside them. Ray is
never imported into the verify process.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold.errors import one_line
from scaffold.render.ray import (
    SOCKET_PATH_MAX,
    TRIAL_RESOURCES,
    ray_socket_example,
    ray_sockets_fit,
)
from scaffold.verify.types import CheckFailed, read_config
from scaffold.write.names import RAY_CONFIG_FILE

WORKER_TIMEOUT_S = 300


@dataclass(frozen=True)
class Route:
    """What the check needs from ``benchmark_ray.yaml``."""

    package: str
    backbone: str
    kwargs: dict[str, Any]


def read_route(directory: Path) -> Route:
    """The Ray config's package and backbone; a config the Ray route cannot run is a finding."""
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
    return Route(package, backbone, kwargs)


def start_probe(directory: Path) -> RayProbe | None:
    """Start the Ray side of the check early, so that it runs alongside verify's other checks;
    None when the config is not usable (the check itself then says why)."""
    try:
        route = read_route(directory)
    except CheckFailed:
        return None
    return RayProbe(route, directory)


def check_ray(context, probe: RayProbe | None = None) -> str:
    """The ``ray`` check for the Context of a generated folder (see scaffold.verify.checks),
    with the probe `start_probe` started (one is started here when not)."""
    directory: Path = context.directory
    config_path = directory / RAY_CONFIG_FILE
    route = read_route(directory)
    if probe is None or probe.route != route:  # not started, or the config changed meanwhile
        if probe is not None:
            probe.close()
        probe = RayProbe(route, directory)
    expected = _expected_channels(context.state.spec, route.kwargs.get("out_indices"))
    with contextlib.closing(probe):
        _, resources = parse_ray_config(config_path)
        found = probe.result()
    package, backbone = route.package, route.backbone
    if "error" in found:
        what = {
            "import": f"import '{package}'",
            "build": f"build '{backbone}' through BACKBONE_REGISTRY",
        }.get(found["stage"], "run the task")
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


class RayProbe:
    """``python -m scaffold.verify.ray_probe`` running: a one-CPU local Ray instance whose worker
    imports the package and builds the backbone. `result` waits for its answer; `close` ends
    it (Ray shut down, its temporary folder removed) whether or not it answered."""

    def __init__(self, route: Route, directory: Path) -> None:
        self.route = route
        self._scratch = Path(tempfile.mkdtemp(prefix="scaffold-ray-"))
        workdir = self._scratch / "work"  # empty: the driver's directory proves nothing
        workdir.mkdir()
        path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH")) if p)
        request = {
            "package": route.package,
            "backbone": route.backbone,
            "kwargs": route.kwargs,
            "ray_dir": str(self._scratch / "ray"),
            "answer": str(self._scratch / "answer.json"),
        }
        self._log = (self._scratch / "probe.log").open("w+", encoding="utf-8")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "scaffold.verify.ray_probe"],
            cwd=workdir,
            env=os.environ | {"PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"},
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ray's processes join its group: `close` can end them all
        )
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(request))
        self._process.stdin.close()

    def result(self) -> dict[str, Any]:
        try:
            code = self._process.wait(timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise CheckFailed(f"the Ray worker did not answer in {WORKER_TIMEOUT_S} s") from exc
        try:
            answer = json.loads((self._scratch / "answer.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            answer = None
        if code != 0 or not isinstance(answer, dict):
            self._log.seek(0)
            lines = self._log.read().strip().splitlines()
            last = lines[-1] if lines else f"exit code {code}"
            raise CheckFailed(f"the local Ray instance failed: {last}")
        return answer

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()  # the probe shuts Ray down on SIGTERM
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        # Whatever Ray left running (stopped while it was starting, its agents on the way out).
        with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._log.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    @property
    def group(self) -> int:
        """The process group of the probe and of every process Ray started for it."""
        return self._process.pid


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
