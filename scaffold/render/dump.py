"""The one YAML writer: every YAML file scaffold writes (benchmark, Ray route, baselines, fit configs,
the smoke task) goes through `dump`, so they all look alike and a value reads back as it was written.

Block mappings in the order given; a list of scalars in flow style (``means: [0.5, 0.5]``), a list
holding mappings or lists (tasks, callbacks) as a block; no anchors or aliases.
"""

from __future__ import annotations

from typing import Any

import yaml

WIDTH = 100


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = not any(isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump(value: Any) -> str:
    """A YAML block for `value`, without the trailing newline."""
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=WIDTH)
    return text.rstrip("\n")
