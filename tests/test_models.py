"""One suite over every registered model: the model contract of DESIGN.md, checked the same way for all.

Heavy defaults (VGG's 4096-wide fc6/fc7, ResNet-50) are slimmed through each model's own options so the suite runs
in minutes on two cores; `test_default_options_build_and_run` covers the defaults once.
"""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
import torch.nn.functional as F

from pixelwise.errors import ConfigError
from pixelwise.models import build_model, list_models, model_complexity
from pixelwise.models.fcn import FCN
from pixelwise.models.registry import _accepted_options, _get_entry

from _model_options import LIGHT

MODELS = list_models(task="semantic")
NUM_CLASSES = 5


def _build(name: str, in_channels: int = 3, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, NUM_CLASSES, in_channels, **{**LIGHT.get(name, {}), **extra})


def test_the_canon_is_registered() -> None:
    expected = {"fcn32s", "fcn16s", "fcn8s", "segnet", "deconvnet", "dilated_frontend", "deeplabv3",
                "deeplabv3plus", "unet", "encoder_unet", "patch_classifier"}
    assert expected <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_options_are_the_model_classs_own_keyword_arguments(name: str) -> None:
    """A model's options are declared once, in its class's ``__init__``: the registry reads them from there."""
    factory = _get_entry(name).factory
    cls = factory.func if isinstance(factory, functools.partial) else factory
    assert isinstance(cls, type) and issubclass(cls, torch.nn.Module), f"{name} registers {factory!r}, not a class"
    own = [p for p in inspect.signature(cls).parameters if p not in ("num_classes", "in_channels")]
    fixed = set(factory.keywords) if isinstance(factory, functools.partial) else set()
    assert _accepted_options(factory) == sorted(set(own) - fixed)


def test_a_variant_is_its_class_with_one_argument_fixed() -> None:
    for variant in (32, 16, 8):
        model = _build(f"fcn{variant}s")
        assert isinstance(model, FCN) and model.variant == variant
    # The fixed argument belongs to the name, it is not an option of it.
    with pytest.raises(ConfigError, match="'variant'.*accepted options: backbone, backbone_weights, dropout"):
        build_model("fcn8s", NUM_CLASSES, variant=16)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("in_channels", "size"), [(3, (97, 131)), (1, (45, 38))])
def test_logits_have_the_input_size(name: str, in_channels: int, size: tuple[int, int]) -> None:
    model = _build(name, in_channels).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, *size))
    assert logits.shape == (2, NUM_CLASSES, *size)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_train_step_at_batch_size_one(name: str) -> None:
    model = _build(name).train()
    images = torch.randn(1, 3, 64, 80)
    target = torch.randint(0, NUM_CLASSES, (1, 64, 80))
    target[0, :5] = 255
    loss = F.cross_entropy(model(images), target, ignore_index=255)
    loss.backward()
    assert torch.isfinite(loss)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # Every trainable parameter takes part (DDP needs no find_unused_parameters) and its gradient is finite.
    no_grad = [n for n, p in trainable.items() if p.grad is None]
    assert not no_grad, f"parameters outside the graph: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())


@pytest.mark.parametrize("name", MODELS)
def test_default_options_build_and_run(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 67, 75)).shape == (1, NUM_CLASSES, 67, 75)


@pytest.mark.parametrize("name", MODELS)
def test_complexity_is_counted(name: str) -> None:
    cost = model_complexity(name, num_classes=21, size=(128, 128))
    assert cost["params"] > 0 and cost["flops"] > 0
    # Convolutional cost grows with the pixel count (the patch classifier exactly, the others about 4x).
    bigger = model_complexity(name, num_classes=21, size=(256, 256))
    assert 3.0 < bigger["flops"] / cost["flops"] < 5.0


@pytest.mark.parametrize("name", MODELS)
def test_torch_compile_captures_one_graph(name: str) -> None:
    # fullgraph=True fails on any graph break; the eager backend runs the captured graph without code generation,
    # so this checks that torch.compile can take the whole model in a few seconds. Inductor: see the next test.
    torch._dynamo.reset()
    model = _build(name).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True, backend="eager")(images), model(images))


@pytest.mark.compile
@pytest.mark.parametrize("name", MODELS)
def test_torch_compile_matches_eager(name: str) -> None:
    torch._dynamo.reset()
    model = _build(name).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        eager = model(images)
        compiled = torch.compile(model, dynamic=False)(images)
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)


def test_model_modules_share_code_through_common_and_registry_only() -> None:
    """No model module imports another (shared pieces live in models/common.py and layers/), and layers/ imports
    nothing from models/ or backbones: the import graph of models/ and layers/ has no cycle."""
    import ast
    from pathlib import Path

    import pixelwise.layers
    import pixelwise.models

    def imports(path: Path) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        return found

    shared = {"pixelwise.models.common", "pixelwise.models.registry"}
    for path in Path(pixelwise.models.__path__[0]).glob("*.py"):
        if path.stem == "__init__":
            continue
        others = {
            m for m in imports(path)
            if m.startswith("pixelwise.models.") and not any(m == s or m.startswith(s + ".") for s in shared)
        }
        assert not others, f"{path.name} imports {sorted(others)}"
    for path in Path(pixelwise.layers.__path__[0]).glob("*.py"):
        upward = {m for m in imports(path) if m.startswith(("pixelwise.models", "pixelwise.backbones"))}
        assert not upward, f"layers/{path.name} imports {sorted(upward)}"
