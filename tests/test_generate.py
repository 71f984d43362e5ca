"""new-backbone's output, checked in a fresh interpreter against timm's and TerraTorch's rules."""

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scaffold.errors import ScaffoldError
from scaffold.pipeline.new_backbone import Options, generate

from .conftest import MODELS, ROOT, run_cli, run_fresh

# Run in a fresh interpreter, from another working directory: import each generated package, build
# the backbone with timm (features_only), through BACKBONE_REGISTRY and through the generated
# factory, and hold the outputs to timm's feature rules.
FRESH_CHECK = r"""
import importlib, json, math, sys, torch, timm
from terratorch.registry import BACKBONE_REGISTRY, MODEL_FACTORY_REGISTRY
results = {}
for out, name, factory, shape in json.loads(sys.argv[1]):
    sys.path.insert(0, out)
    importlib.import_module(name)
    x = torch.rand(2, *shape[1:])
    H, W = shape[-2:]
    m = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        outs = m(x)
    info = m.feature_info
    rules = {
        "count": len(outs) == len(info.channels()),  # the selected features
        "channels": all(o.shape[1] == c for o, c in zip(outs, info.channels())),
        "size": all(o.shape[-2] <= math.ceil(H / r) + 1 and o.shape[-1] <= math.ceil(W / r) + 1
                    for o, r in zip(outs, info.reduction())),
        "finite": all(bool(o.isfinite().all()) for o in outs),
    }
    bb = BACKBONE_REGISTRY.build(name)
    with torch.no_grad():
        registry_shapes = [list(o.shape) for o in bb(x)]
    model = MODEL_FACTORY_REGISTRY.build(factory).build_model(
        "segmentation", backbone=name, decoder="UperNetDecoder", decoder_channels=16, num_classes=3
    )
    y = model(x).output
    y.mean().backward()
    results[name] = {
        "rules": rules,
        "shapes": [list(o.shape) for o in outs],
        "channels": info.channels(),
        "reductions": info.reduction(),
        "registry_out_channels": list(bb.out_channels),
        "registry_shapes": registry_shapes,
        "seg_shape": list(y.shape),
        "grad": any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters()),
    }
print(json.dumps(results))
"""

EXPECTED = {  # layout -> (channels, reductions, feature map sizes (h, w)) of the default selection
    "cnn": ([8, 16, 32], [2, 4, 8], [(32, 32), (16, 16), (8, 8)]),
    "vit": ([32] * 4, [8] * 4, [(4, 6)] * 4),
    "channels_last": ([12, 24, 48], [4, 8, 16], [(16, 16), (8, 8), (4, 4)]),
    "temporal": ([8, 16, 32], [2, 4, 8], [(32, 32), (16, 16), (8, 8)]),
    "dict_out": ([16, 24, 40], [2, 4, 8], [(32, 32), (16, 16), (8, 8)]),
    "list_out": ([8, 16], [2, 4], [(32, 32), (16, 16)]),
    "tokens": ([16, 32], [4, 8], [(16, 16), (8, 8)]),
    "swin3d": ([48, 96, 192, 384], [4, 8, 16, 32], [(16, 16), (8, 8), (4, 4), (2, 2)]),
}


def test_generated_backbones_in_a_fresh_interpreter(generated, tmp_path):
    from scaffold.write.names import names_for

    jobs = [
        [str(r.out), r.backbone, names_for(r.backbone).factory_class, list(r.input_shape)]
        for r in generated.values()
    ]
    done = run_fresh([sys.executable, "-c", FRESH_CHECK, json.dumps(jobs)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for layout, (channels, reductions, sizes) in EXPECTED.items():
        r = results[generated[layout].backbone]
        assert all(r["rules"].values()), (layout, r)
        assert r["channels"] == channels and r["reductions"] == reductions, layout
        assert [tuple(s[-2:]) for s in r["shapes"]] == sizes, layout
        assert r["registry_out_channels"] == channels, layout
        assert r["registry_shapes"] == r["shapes"], layout
        height, width = generated[layout].input_shape[-2:]
        assert r["seg_shape"] == [2, 3, height, width], layout
        assert r["grad"], layout


def test_feature_info_literals_are_in_the_source(generated):
    source = (generated["vit"].package / "backbone.py").read_text()
    # Measured values written as literals a reader sees, not recomputed.
    assert '"module": "model.blocks.5",' in source
    assert '"num_chs": 32,' in source and '"reduction": 8,' in source
    assert '"prefix_tokens": 1}' in source
    assert "OUT_INDICES: tuple[int, ...] = (1, 2, 3, 5)" in source
    factory = (generated["vit"].package / "factory.py").read_text()
    assert (
        'DEFAULT_NECKS: list[dict[str, Any]] = [{"name": "LearnedInterpolateToPyramidal"}]'
        in factory
    )


def test_generated_code_is_clean_under_ruff(generated):
    dirs = [str(r.out) for r in generated.values()]
    for cmd in (["check", "--isolated"], ["format", "--isolated", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *cmd, "--no-cache", *dirs],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_generated_code_is_clean_under_the_repositorys_rules(generated):
    """The rules scaffold/ keeps (pyproject.toml's select: RET, RUF, B, ...), not ruff's defaults."""
    dirs = [str(r.out) for r in generated.values()]
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml")]
        + ["--no-cache", *dirs],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_generated_package_type_checks(generated):
    result = generated["cnn"]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
        + ["--cache-dir", os.devnull, str(result.package)],  # no cache left in the folder
        cwd=result.out,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_generated_file_says_it_was_generated(generated):
    result = generated["cnn"]
    for path in result.files:
        if path.is_file():
            lines = path.read_text().splitlines()
            # a script's #! line comes first (sbatch requires it): the header follows it
            first, second = lines[1:3] if lines[0].startswith("#!") else lines[:2]
            if "_runtime" in path.parts:  # scaffold's own, replaced as a whole by update
                assert first.startswith("# scaffold runtime ") and "replaces" in second
                continue
            assert first.startswith("# Generated by scaffold") and "scaffold update" in first


def test_benchmark_yaml_schema(generated):
    result = generated["temporal"]
    config = yaml.safe_load(result.benchmark_config.read_text())
    # Relative to the folder (commands run from there); never "./...", which iterate reads
    # against its own installed folder.
    assert config["custom_modules_path"] == result.package.name
    assert config["storage_uri"] == "runs/hpo"
    assert config["defaults"]["trainer_args"]["accelerator"] == "auto"
    model_args = config["defaults"]["terratorch_task"]["model_args"]
    assert model_args["backbone"] == result.backbone and model_args["backbone_in_chans"] == 3
    task = config["tasks"][0]
    assert task["type"] == "segmentation" and task["direction"] == "min"
    init = task["datamodule"]["init_args"]
    assert init["expand_temporal_dimension"] is True and init["dataset_bands"] == [0, 1, 2]
    assert init["train_data_root"] == "data/train/img"
    assert (result.out / init["train_data_root"]).is_dir()
    assert config["optimization_space"]["lr"]["type"] == "real"
    assert "backbone_import" not in config and "backbone_registration" not in config


def test_smoke_dataset_has_the_models_bands_and_frames(generated):
    import rasterio

    data = generated["temporal"].out / "data"
    images = sorted((data / "train" / "img").glob("*_img.tif"))
    assert len(images) == 8
    with rasterio.open(images[0]) as f:
        assert (f.count, f.height, f.width) == (3 * 6, 64, 64)  # C*T bands
    with rasterio.open(data / "train" / "lbl" / "s0_mask.tif") as f:
        assert f.count == 1 and set(f.read().ravel().tolist()) <= {0, 1}


# -- safety -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("9lives", "must be a Python identifier"),
        ("my-net", "must be a Python identifier"),
        ("timm_mynet", "registry prefix"),
        ("terratorch_mynet", "registry prefix"),
        ("resnet18", "is already a timm model"),
        ("prithvi_eo_v2_300", "is already a TerraTorch backbone"),
        ("json", "is the name of an installed Python module"),
        ("cnn", "is the name of the model's own module"),
        ("encoder_decoder", "would register EncoderDecoderFactory, which TerraTorch already has"),
    ],
)
def test_bad_names_are_refused(tmp_path, name, message):
    with pytest.raises(ScaffoldError, match=message):
        generate(Options(str(MODELS / "cnn.py"), {}, name=name, out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_foreign_non_empty_directory_is_never_written(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--no-verify")
    assert done.returncode == 2 and "not empty and not made by scaffold" in done.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"


def test_an_output_that_cannot_be_written_is_bad_input(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = run_cli(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(blocker / "x"), "--no-verify"
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: --out {blocker / 'x'}: cannot write there")


def test_a_generated_directory_is_left_to_update(generated):
    out = generated["cnn"].out
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(
        ScaffoldError, match="already holds a generated backbone; run `scaffold update"
    ):
        generate(Options(str(MODELS / "cnn.py"), {}, out=out))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    import scaffold.render.smoke

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scaffold.render.smoke, "write_smoke_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary folder


def test_values_are_quoted_not_pasted(tmp_path):
    """A path with quotes, spaces and a YAML-significant colon; string arguments with quotes."""
    weird = tmp_path / 'it\'s a "dir": #1'
    weird.mkdir()
    model = weird / "quoted_net.py"
    model.write_text(
        "from torch import nn\n\n\nclass QuotedNet(nn.Module):\n"
        "    def __init__(self, tag: str = 'x', in_chans: int = 3):\n"
        "        super().__init__()\n        self.tag = tag\n"
        "        self.a = nn.Conv2d(in_chans, 4, 3, 2, 1)\n        self.b = nn.Conv2d(4, 8, 3, 2, 1)\n\n"
        "    def forward(self, x):\n        return self.b(self.a(x))\n"
    )
    tag = "a'b\"c\\n: {d}"
    out = weird / "out dir"
    result = generate(Options(str(model), {"tag": tag}, out=out))
    sys.path.insert(0, str(result.out))
    try:
        backbone = importlib.import_module(f"{result.backbone}.backbone")
    finally:
        sys.path.remove(str(result.out))
    assert {"tag": tag} == backbone.MODEL_ARGS
    # The model lives beside the output folder: its root is stated relative to the package.
    assert backbone.MODEL_IMPORT_ROOT == "../.."
    assert backbone.load_model_class().__name__ == "QuotedNet"
    assert str(weird) in sys.path  # resolved when the model is loaded, not before
    sys.path.remove(str(weird))
    config = yaml.safe_load(result.benchmark_config.read_text())
    assert config["custom_modules_path"] == result.package.name
    assert config["tasks"][0]["datamodule"]["init_args"]["train_data_root"] == "data/train/img"


def test_new_backbone_json_contract(tmp_path):
    done = run_cli(
        "new-backbone",
        str(MODELS / "channels_last.py"),
        "--out",
        str(tmp_path / "cl"),
        "--name",
        "cl_net",
        "--no-verify",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["backbone"] == "cl_net"
    assert data["package"] == str(tmp_path / "cl" / "cl_net")
    assert data["benchmark_config"] == str(tmp_path / "cl" / "benchmark.yaml")
    assert data["input_shape"] == [1, 5, 64, 64]
    assert data["verified"] is False
    assert str(tmp_path / "cl" / "cl_net" / "backbone.py") in data["files"]
    assert all(Path(f).exists() for f in data["files"])
    assert math.isfinite(len(data["files"]))


# The features_only model of a generated backbone whose taps are item 1 of blocks that return
# (aux, tokens): each feature must be the model's own token stream after that block.
ITEM_CHECK = r"""
import importlib, sys, torch, timm
out, name = sys.argv[1], sys.argv[2]
sys.path.insert(0, out)
importlib.import_module(name)
m = timm.create_model(name, features_only=True).eval()
model = next(mod for mod in m.modules() if type(mod).__name__ == "TupleBlocks")
x = torch.rand(2, 3, 64, 64)
with torch.no_grad():
    feats = m(x)
    stream = model.token_stream(x)
assert len(feats) == len(stream) == 4, (len(feats), len(stream))
for f, t in zip(feats, stream):
    grid = t.transpose(1, 2).reshape(2, t.shape[2], 16, 16)
    assert f.shape == grid.shape and torch.equal(f, grid), (f.shape, grid.shape)
print("same")
"""


def test_taps_on_an_item_of_a_blocks_output(tmp_path):
    """Blocks that return (aux, tokens): the wrapper's hooks take item 1 of each block, the
    features_only model returns the model's own token stream, and quick verify passes."""
    out = tmp_path / "tb"
    # (not tuple_net: a model file of tests/test_analysis.py by that name is importable here)
    done = run_cli(
        "new-backbone",
        str(MODELS / "tuple_blocks.py"),
        "--out",
        str(out),
        "--name",
        "tuple_blocks_net",
        "--no-verify",
    )
    assert done.returncode == 0, done.stderr
    source = (out / "tuple_blocks_net" / "backbone.py").read_text()
    for i in range(4):
        assert f"'module': 'model.blocks.{i}'" in source.replace('"', "'")
    assert source.replace('"', "'").count("'key': 1") == 4
    done = run_fresh([sys.executable, "-c", ITEM_CHECK, str(out), "tuple_blocks_net"], cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr[-3000:]
    done = run_cli("verify", str(out), "--quick")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
