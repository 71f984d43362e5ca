"""The spec's typed parts write the JSON that `inspect --json` and state.json hold, and read it back."""

from __future__ import annotations

import json

import pytest

from scaffold.errors import ScaffoldError
from scaffold.spec import SPEC_VERSION, BackboneSpec, FeatureSpec, ForwardCall, Param


def spec(**changes) -> BackboneSpec:
    fields = dict(
        target="m.py:M", module="m", qualname="M", kind="class", import_root=None,
        source_file=None, args={}, input_shape=(1, 3, 32, 32), in_chans_arg="in_chans",
        features=(FeatureSpec("stem", 8, 2, "NCHW", (1, 8, 16, 16), (16, 16)),), out_indices=(0,),
        output_kind="tensor", traced_on="cpu", num_params=10,
    )  # fmt: skip
    return BackboneSpec(**{**fields, **changes})


CALL = {
    "image": "x_dict.imgs",
    "image_positional": False,
    "args": {"x_dict.chn_ids": [0, 3, 5], "mask_ratio": 0.0},
    "forms": {"x_dict.chn_ids": "batched", "mask_ratio": "value"},
    "per_band": ["x_dict.chn_ids"],
    "fixed_noise": True,
}


def test_forward_call_and_params_write_todays_json_and_read_it_back():
    call = ForwardCall.from_dict(CALL)
    assert call.image == "x_dict.imgs" and call.per_band == ("x_dict.chn_ids",)
    assert call.to_dict() == CALL and call == CALL and call["forms"] == CALL["forms"]
    params = (Param("in_chans", "4", "int"), Param("width"))
    s = spec(forward_call=call, constructor=params)
    data = json.loads(s.to_json())
    assert data["forward_call"] == CALL
    assert data["constructor"] == [
        {"name": "in_chans", "default": "4", "annotation": "int"},
        {"name": "width", "default": None, "annotation": None},
    ]
    back = BackboneSpec.from_json(s.to_json())
    assert back == s
    assert isinstance(back.forward_call, ForwardCall) and back.forward_call.fixed_noise is True
    assert all(isinstance(p, Param) for p in back.constructor)
    assert back.constructor[0].default == "4"


def test_the_plain_call_is_the_empty_mapping():
    assert ForwardCall().plain and ForwardCall().to_dict() == {} and ForwardCall() == {}
    assert ForwardCall.from_dict({}) == ForwardCall()
    assert not ForwardCall(fixed_noise=True).plain  # a fixed-noise call is recorded
    assert not ForwardCall(image="x_optical", image_positional=False).plain
    assert json.loads(spec().to_json())["forward_call"] == {}


def test_a_spec_of_a_newer_scaffold_is_refused_in_one_line():
    data = spec().to_dict()
    data["spec_version"] = SPEC_VERSION + 1
    with pytest.raises(ScaffoldError) as info:
        BackboneSpec.from_dict(data, where="/out/.scaffold/state.json")
    message = str(info.value)
    assert message.startswith("/out/.scaffold/state.json was written by a newer scaffold")
    assert f"(spec_version {SPEC_VERSION + 1}, this one reads {SPEC_VERSION})" in message
    assert "\n" not in message
    data["spec_version"] = "one"
    with pytest.raises(ScaffoldError, match="spec_version 'one' is not one scaffold writes"):
        BackboneSpec.from_dict(data)


def test_an_older_spec_without_a_version_or_the_newer_fields_still_reads():
    data = spec().to_dict()
    for key in ("spec_version", "forward_call", "constructor", "head_modules"):
        del data[key]
    back = BackboneSpec.from_dict(data)
    assert back.spec_version == SPEC_VERSION and back.forward_call == ForwardCall()
    assert back.constructor == () and back.features == spec().features


def test_an_unknown_layout_is_refused():
    data = spec().to_dict()
    data["features"][0]["layout"] = "NCWH"
    with pytest.raises(ScaffoldError, match="unknown feature layout 'NCWH'"):
        BackboneSpec.from_dict(data)


def test_a_state_of_a_newer_scaffold_is_refused_naming_the_file(tmp_path):
    from scaffold.write.names import STATE_DIR, STATE_FILE
    from scaffold.write.state import read_state

    data = spec().to_dict()
    data["spec_version"] = SPEC_VERSION + 1
    state = {
        "scaffold_version": "9.9",
        "options": {"target": "m.py", "args": {}},
        "spec": data,
        "files": [],
        "bases": {},
    }
    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ScaffoldError, match=r"state\.json was written by a newer scaffold"):
        read_state(tmp_path)
    data["spec_version"] = SPEC_VERSION
    (tmp_path / STATE_DIR / STATE_FILE).write_text(json.dumps(state))
    assert read_state(tmp_path).spec == spec()  # the same state at today's version reads
