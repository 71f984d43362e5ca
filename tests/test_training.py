"""Where people train: the backbone holds only what its forward runs, so Lightning's DDP trains
it; the trainable check names a parameter without a gradient; `terratorch fit` runs a task's
fit config on two processes; a whole-model checkpoint loads into the backbone without its head."""

from __future__ import annotations

import importlib
import logging
import sys

import pytest
import torch
import yaml

from scaffold.pipeline.new_backbone import Options, generate
from scaffold.verify.ladder import verify_dir

from .conftest import BIN, MODELS, ROOT, run_fresh

STEPS = 3


def checks(report) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in report.checks}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The classifier CNN with a classification task, the UNet with a segmentation task;
    generated, not verified."""
    root = tmp_path_factory.mktemp("training")
    return {
        "cnn": generate(
            Options(str(MODELS / "cnn.py"), {}, out=root / "cnn", task="classification")
        ),
        "unet": generate(Options(str(MODELS / "unet.py"), {}, out=root / "unet")),
    }


def backbone_of(result, **kwargs):
    import timm

    for mod in [m for m in sys.modules if m.split(".")[0] == result.backbone]:
        del sys.modules[mod]
    sys.path.insert(0, str(result.out))
    try:
        importlib.import_module(result.backbone)
    finally:
        sys.path.remove(str(result.out))
    return timm.create_model(result.backbone, **kwargs)


def test_the_backbone_holds_no_head_and_every_parameter_gets_a_gradient(made):
    for name, head, kept in (("cnn", "head", "stage2"), ("unet", "decoder", "encoder")):
        for backbone in (backbone_of(made[name]), backbone_of(made[name], features_only=True)):
            keys = list(backbone.state_dict())
            assert not any(f"model.{head}." in k for k in keys), keys
            assert any(f"model.{kept}." in k for k in keys)
            features = backbone(torch.rand(2, *backbone.pretrained_cfg["input_size"]))
            sum(f.mean() for f in features).backward()
            dead = [n for n, p in backbone.named_parameters() if p.grad is None]
            assert dead == []
    # The whole UNet has 120,834 parameters; the backbone holds the encoder's alone.
    backbone = backbone_of(made["unet"])
    whole = backbone_of(made["unet"], prune=False)
    assert sum(p.numel() for p in whole.parameters()) == 120_834
    encoder = sum(p.numel() for p in whole.model.encoder.parameters())
    assert sum(p.numel() for p in backbone.parameters()) == encoder == 120_834 - 47_226


def test_a_whole_model_checkpoint_loads_into_the_backbone(made, caplog, tmp_path):
    result = made["unet"]
    backbone = backbone_of(result, prune=False)
    whole = backbone.model  # the person's UNet, decoder included
    checkpoint = tmp_path / "unet.ckpt"
    # As Lightning saves a module that holds the model as `model`.
    torch.save({"state_dict": {f"model.{k}": v for k, v in whole.state_dict().items()}}, checkpoint)
    with caplog.at_level(logging.INFO):
        loaded = backbone_of(
            result, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)}
        )
    assert loaded.removed_modules == ("model.decoder",)
    own = loaded.state_dict()
    assert own.keys() == {f"model.{k}" for k in whole.state_dict() if k.startswith("encoder.")}
    for key, value in whole.encoder.state_dict().items():
        assert torch.equal(own[f"model.encoder.{key}"], value)
    decoder_keys = sum(1 for k in whole.state_dict() if k.startswith("decoder."))
    assert decoder_keys == 20
    assert (
        f"dropped {decoder_keys} checkpoint tensors of modules the backbone does not hold "
        "(model.decoder)" in caplog.text
    )


def test_trainable_check_names_a_layer_the_forward_never_uses(tmp_path):
    result = generate(Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "cnn"))
    found = checks(verify_dir(result.out, quick=True))
    assert found["trainable"] == (
        True,
        "all 52 trainable tensors get a gradient on a 4x4x64x64 batch of the task",
    )
    assert found["fit configs"] == (
        True,
        (
            "terratorch fit parses and builds fit/smoke.yaml; one training batch of each task's "
            "data runs through its model"
        ),
    )

    backbone_py = result.package / "backbone.py"
    source = backbone_py.read_text()
    # A layer the subclass adds and the forward never uses.
    marker = "    constants = CONSTANTS\n"
    assert marker in source
    source = source.replace(
        "from typing import Any\n", "from typing import Any\n\nfrom torch import nn\n"
    )
    backbone_py.write_text(
        source.replace(
            marker,
            marker + "\n    def __init__(self, **kwargs: Any) -> None:\n"
            "        super().__init__(**kwargs)\n        self.unused = nn.Linear(4, 4)\n",
        )
    )
    report = verify_dir(result.out, quick=True)
    ok, detail = checks(report)["trainable"]
    assert not ok and not report.ok
    assert detail.startswith("2 of 54 trainable tensors get no gradient, in `encoder.unused`:")

    # The backbone built whole keeps the CNN's classifier, which never gets a gradient.
    backbone_py.write_text(
        source.replace(
            marker,
            marker + "\n    def __init__(self, **kwargs: Any) -> None:\n"
            "        super().__init__(**{**kwargs, 'prune': False})\n",
        )
    )
    ok, detail = checks(verify_dir(result.out, quick=True))["trainable"]
    assert not ok
    assert detail.startswith("2 of 54 trainable tensors get no gradient, in `encoder.model.head`:")


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["cnn", "unet"])
def test_the_benchmark_task_trains_under_lightning_ddp(made, name):
    """Two CPU processes (gloo), strategy="ddp" with find_unused_parameters=False."""
    done = run_fresh(
        [
            str(BIN / "python"),
            str(ROOT / "tests" / "train_ddp.py"),
            str(made[name].benchmark_config),
            str(STEPS),
        ],
        cwd=made[name].out,  # the YAML's paths are relative to its folder
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"global_step {STEPS}" in done.stdout


@pytest.mark.e2e
def test_terratorch_fit_trains_the_fit_config_on_two_processes(made):
    result = made["unet"]
    config = result.out / "fit" / "smoke.yaml"
    fit = yaml.safe_load(config.read_text())
    assert fit["model"]["class_path"] == "terratorch.tasks.SemanticSegmentationTask"
    assert fit["model"]["init_args"]["lr"] == pytest.approx(1e-4)  # the middle of 1e-5..1e-3
    assert fit["custom_modules_path"] == result.package.name  # run from the folder (cwd)
    done = run_fresh(
        [
            str(BIN / "terratorch"),
            "fit",
            "--config",
            str(config),
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.max_steps",
            str(STEPS),
            "--trainer.max_epochs",
            str(STEPS),
            "--trainer.limit_val_batches",
            "0",
            "--trainer.enable_checkpointing",
            "false",
            "--trainer.logger",
            "false",
            "--data.init_args.batch_size",
            "2",
        ],
        cwd=result.out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"`Trainer.fit` stopped: `max_steps={STEPS}` reached." in done.stdout + done.stderr


def test_update_keeps_a_hand_edit_of_a_fit_config_and_follows_a_hand_added_task(tmp_path):
    from scaffold.pipeline.update import update_dir
    from scaffold.write.state import read_state

    result = generate(Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "cnn"))
    smoke = result.out / "fit" / "smoke.yaml"
    smoke.write_text(smoke.read_text().replace("    lr: 0.0001\n", "    lr: 0.0005  # mine\n"))
    config = result.benchmark_config
    main = yaml.safe_load(config.read_text())
    main["tasks"].append({**main["tasks"][0], "name": "second", "early_stop_patience": 2})
    config.write_text(yaml.safe_dump(main, sort_keys=False))  # a hand edit of the whole file
    assert [t["name"] for t in yaml.safe_load(config.read_text())["tasks"]] == ["smoke", "second"]

    update = update_dir(result.out)
    # the hand-added task is run with the seeds too
    assert update.changes == [("fit/second.yaml", "added"), ("fit/seeds.sh", "updated")]
    assert "TASKS=(smoke second)\n" in (result.out / "fit" / "seeds.sh").read_text()
    assert "    lr: 0.0005  # mine\n" in smoke.read_text()
    added = yaml.safe_load((result.out / "fit" / "second.yaml").read_text())
    assert added["trainer"]["callbacks"] == [
        {
            "class_path": "lightning.pytorch.callbacks.EarlyStopping",
            "init_args": {"monitor": "val/loss", "patience": 2},
        }
    ]
    assert "fit/second.yaml" in read_state(result.out).files
    assert update_dir(result.out).changes == []  # in step: nothing more to do
