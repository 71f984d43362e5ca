"""The generated backbone's runtime (scaffold/runtime, copied into each package as _runtime/):
its features equal hooks on a plain copy of the model, under DataParallel-style replicas that run
at once, and under torch.compile(fullgraph=True), on a CNN, a ViT and a temporal model."""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading

import pytest
import torch
from torch import nn

LAYOUTS = ("cnn", "vit", "temporal")


def backbone_of(result, **kwargs) -> nn.Module:
    """The generated package's backbone class, built as the factory builds it."""
    sys.path.insert(0, str(result.out))
    try:
        module = importlib.import_module(f"{result.backbone}.backbone")
    finally:
        sys.path.remove(str(result.out))
    cls = next(
        v
        for v in vars(module).values()
        if isinstance(v, type) and v.__module__ == module.__name__ and issubclass(v, nn.Module)
    )
    torch.manual_seed(0)
    return cls(**kwargs).eval(), module


def reference(backbone: nn.Module, module, x: torch.Tensor) -> list[torch.Tensor]:
    """The selected features by hooks on a plain copy of the model (the same weights)."""
    plain = module.load_model_class()(**module.MODEL_ARGS).eval()
    own = {k.removeprefix("model."): v for k, v in backbone.state_dict().items()}
    _missing, unexpected = plain.load_state_dict(own, strict=False)
    assert not unexpected
    seen: dict[str, list[torch.Tensor]] = {}
    for f in module.FEATURES:
        name = f["module"].removeprefix("model.")
        plain.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: seen.setdefault(name, []).append(out)
        )
    # (a head that fits only the analysed size may fail after the features are seen)
    with torch.no_grad(), contextlib.suppress(Exception):
        plain(x)
    wanted = [module.FEATURES[i] for i in backbone.out_indices]
    return [seen[f["module"].removeprefix("model.")][f["call"]] for f in wanted]


def input_of(module, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    frames = (module.NUM_FRAMES,) if module.NUM_FRAMES else ()
    return torch.randn(batch, module.IN_CHANS, *frames, *module.INPUT_SIZE)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_features_equal_hooks_on_a_plain_copy(generated, layout):
    backbone, module = backbone_of(generated[layout])
    x = input_of(module)
    with torch.no_grad():
        features = backbone(x)
    expected = reference(backbone, module, x)
    assert len(features) == len(expected) == len(backbone.out_indices)
    for got, want in zip(features, expected, strict=True):
        assert torch.equal(got, want)
    assert not backbone._captures  # nothing of the forward stays on the module


def cpu_replicas(network: nn.Module, n: int) -> list[nn.Module]:
    """`n` replicas of `network` made as torch.nn.parallel.replicate makes them (each module
    by ``_replicate_for_data_parallel``, the children wired to the replica's own), sharing the
    parameters: replicate itself broadcasts to CUDA devices only."""
    modules = list(network.modules())
    index = {m: i for i, m in enumerate(modules)}
    copies = [[m._replicate_for_data_parallel() for m in modules] for _ in range(n)]
    for i, m in enumerate(modules):
        for key, child in m._modules.items():
            for j in range(n):
                setattr(copies[j][i], key, None if child is None else copies[j][index[child]])
        for key, param in m._parameters.items():
            for j in range(n):
                copies[j][i]._parameters.pop(key, None)
                setattr(copies[j][i], key, param)
    return [c[0] for c in copies]


def run_at_once(replicas: list[nn.Module], inputs: list[torch.Tensor]) -> list:
    """Each replica's forward on its input, in a thread each, started together (as
    parallel_apply runs them); exceptions are returned in place of the outputs."""
    barrier = threading.Barrier(len(replicas))
    results: list = [None] * len(replicas)

    def work(i: int) -> None:
        barrier.wait()
        try:
            with torch.no_grad():
                results[i] = replicas[i](inputs[i])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("layout", LAYOUTS)
def test_replicas_running_at_once_each_return_their_own_features(generated, layout):
    backbone, module = backbone_of(generated[layout], image_features=True)
    x = input_of(module, batch=4)
    with torch.no_grad():
        whole = backbone(x)
    halves = list(x.chunk(2))
    for _ in range(3):  # threads interleave differently from run to run
        outputs = run_at_once(cpu_replicas(backbone, 2), halves)
        for out in outputs:
            assert not isinstance(out, Exception), out
        for i, feature in enumerate(whole):
            joined = torch.cat([outputs[0][i], outputs[1][i]])
            torch.testing.assert_close(joined, feature)
    # DataParallel without GPUs calls the module itself: the same features.
    with torch.no_grad():
        parallel = nn.DataParallel(backbone)(x)
    for got, want in zip(parallel, whole, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_with_fullgraph_the_features_are_the_same(generated, layout):
    import torch._dynamo

    backbone, module = backbone_of(generated[layout], image_features=True)
    x = input_of(module)
    with torch.no_grad():
        eager = backbone(x)
    torch._dynamo.reset()
    compiled = torch.compile(backbone, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        got = compiled(x)
    assert len(got) == len(eager)
    for a, b in zip(got, eager, strict=True):
        torch.testing.assert_close(a, b)
    # and a training step: the gradient of every trainable parameter reaches it compiled too
    loss = sum(f.float().mean() for f in compiled(x))
    loss.backward()
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)


def test_a_deep_copy_captures_into_its_own_dict(generated):
    import copy

    backbone, module = backbone_of(generated["vit"])
    twin = copy.deepcopy(backbone)
    assert twin._captures is not backbone._captures
    x = input_of(module)
    with torch.no_grad():
        for a, b in zip(twin(x), backbone(x), strict=True):
            assert torch.equal(a, b)
    hooks = [h for m in twin.modules() for h in m._forward_hooks.values()]
    assert hooks and all(h.args[0] is twin._captures for h in hooks)
