"""Dense regression models (tasks "depth", "normals", "depth+normals"): a semantic base with a depth head, a normals
head or both sharing the decoder (:mod:`pixelwise.models.dense`)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pixelwise.depth.losses import angular_normal_loss, l1_depth_loss
from pixelwise.depth.synthetic import render_scene
from pixelwise.engine import checkpoint
from pixelwise.errors import ConfigError
from pixelwise.models import build_model, count_parameters, get_model_info, list_models, model_complexity
from pixelwise.models import registry
from pixelwise.models.dense import DENSE_BASES, DenseRegressionModel

# Tiny configurations of the bases: every one runs a 2 x 3 x 32 x 32 batch in well under a second.
TINY = {
    "unet": {"base_channels": 4, "depth": 2},
    "encoder_unet": {"backbone": "mobilenet_v2", "decoder_channels": (16, 8, 8, 8, 8)},
    "deeplabv3plus": {"backbone": "mobilenet_v2", "aspp_channels": 16, "decoder_channels": 16,
                      "low_level_channels": 8},
    "fcn8s": {"backbone": "resnet18"},
}
PREFIXES = {"depth": "depth", "normals": "normals", "depth+normals": "depth_normals"}
CHANNELS = {"depth": 1, "normals": 3, "depth+normals": 4}
FAMILIES = [(f"{PREFIXES[task]}_{base}", task, base) for task in PREFIXES for base in DENSE_BASES]


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(n: int = 2, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    frames = [torch.from_numpy(render_scene(i, size=size)["image"]).permute(2, 0, 1).float() / 255 for i in range(n)]
    return (torch.stack(frames) - 0.45) / 0.225


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


# -- registry -----------------------------------------------------------------------------------------------------
def test_families_are_registered_with_their_tasks():
    for task, prefix in PREFIXES.items():
        assert set(list_models(task=task)) == {f"{prefix}_{base}" for base in DENSE_BASES}
    semantic = set(list_models(task="semantic"))
    assert not any(name in semantic for name, _, _ in FAMILIES)
    for name, task, base in FAMILIES:
        info = get_model_info(name)
        assert info["task"] == task
        assert get_model_info(base)["paper"] in info["paper"] and "Eigen" in info["paper"]
    # A checkpoint card names only the tasks pixelwise trains and predicts: not the dense ones yet.
    assert set(checkpoint.TASKS) < set(registry.TASKS)
    assert not {"depth", "normals", "depth+normals"} & set(checkpoint.TASKS)


def test_model_complexity_counts_the_task_outputs_and_the_image():
    tiny = TINY["unet"]
    for task, prefix in PREFIXES.items():
        cost = model_complexity(f"{prefix}_unet", num_classes=21, size=(32, 32), **tiny)  # a table's 21 ignored
        plain = model_complexity("unet", num_classes=CHANNELS[task], size=(32, 32), **tiny)
        assert cost == plain


# -- outputs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,task,base", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_outputs_shapes_dtypes_and_initial_depth(name, task, base):
    torch.manual_seed(0)
    model = build_model(name, CHANNELS[task], **TINY[base], **({"init_depth": 5.0} if "depth" in task else {}))
    assert isinstance(model, DenseRegressionModel) and model.num_outputs == CHANNELS[task]
    x = _images()
    with torch.no_grad():
        out = model(x)
    assert set(out) == set(task.split("+"))
    if "depth" in out:
        depth = out["depth"]
        assert depth.shape == (2, 1, 32, 32) and depth.dtype == torch.float32
        assert torch.isfinite(depth).all() and (depth > 0).all()
        # the untrained model predicts about init_depth (its output layer starts near 0 on the depth channel)
        assert depth.mean().item() == pytest.approx(5.0, rel=0.2)
    if "normals" in out:
        normals = out["normals"]
        assert normals.shape == (2, 3, 32, 32) and normals.dtype == torch.float32
        assert torch.allclose(normals.norm(dim=1), torch.ones(2, 32, 32), atol=1e-5)


@pytest.mark.parametrize("activation", ["log", "softplus"])
def test_depth_activations_positive_and_raw_output(activation):
    torch.manual_seed(0)
    model = build_model("depth_normals_unet", 4, depth_activation=activation, init_depth=2.0, **TINY["unet"])
    x = _images(1)
    with torch.no_grad():
        out = model(x, raw=True)
    assert set(out) == {"depth", "normals", "depth_raw", "normals_raw"}
    act = torch.exp if activation == "log" else torch.nn.functional.softplus
    assert torch.allclose(out["depth"], act(out["depth_raw"]) + 1e-3)
    assert torch.allclose(out["normals"], torch.nn.functional.normalize(out["normals_raw"], dim=1))
    assert out["depth"].mean().item() == pytest.approx(2.0, rel=0.2)

    # Huge raw outputs either way: the depth stays > 0 (min_depth) and finite.
    head = model.base.head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-1e4)
        low = model(x)["depth"]
        head.bias.fill_(1e4)
        high = model(x)["depth"]
    assert torch.equal(low, torch.full_like(low, 1e-3))  # exp / softplus underflow to 0; min_depth remains
    assert torch.isfinite(high).all() and (high > 1e3).all()


def test_init_depth_matches_the_parametrisation():
    for activation in ("log", "softplus"):
        model = DenseRegressionModel("unet", "depth", depth_activation=activation, init_depth=7.5, **TINY["unet"])
        with torch.no_grad():
            model.base.head.weight.zero_()  # raw output 0: exactly init_depth
            depth = model(_images(1))["depth"]
        assert torch.allclose(depth, torch.full_like(depth, 7.5))


def test_gradients_reach_the_first_convolution_from_both_heads():
    torch.manual_seed(0)
    for base in ("unet", "encoder_unet"):
        model = build_model(f"depth_normals_{base}", 4, **TINY[base])
        first = _first_conv(model)
        x = _images()
        for head in ("depth", "normals"):
            model.zero_grad()
            out = model(x)
            (out[head] * torch.randn_like(out[head])).sum().backward()
            assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0, (base, head)


def test_depth_and_normals_share_the_network():
    tiny = TINY["unet"]
    both = build_model("depth_normals_unet", 4, **tiny)
    assert count_parameters(both) == count_parameters(build_model("unet", 4, **tiny))
    assert count_parameters(build_model("depth_unet", 1, **tiny)) == count_parameters(build_model("unet", 1, **tiny))
    assert all(key.startswith("base.") for key in both.state_dict())
    out = both(_images(1))  # one forward, both heads
    assert out["depth"].shape == (1, 1, 32, 32) and out["normals"].shape == (1, 3, 32, 32)


# -- training -----------------------------------------------------------------------------------------------------
def test_depth_unet_overfits_one_frame():
    torch.manual_seed(0)
    frame = render_scene(0, size=(32, 32))
    x = _images(1)
    target = torch.from_numpy(frame["depth"])[None, None]
    valid = target > 0
    model = build_model("depth_unet", 1, **TINY["unet"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def abs_rel(depth: torch.Tensor) -> float:
        return ((depth - target).abs() / target)[valid].mean().item()

    with torch.no_grad():
        start = abs_rel(model(x)["depth"])
    for _ in range(200):
        loss = l1_depth_loss(model(x)["depth"], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        end = abs_rel(model(x)["depth"])
    assert start > 0.1 and end < 0.05, (start, end)


def test_depth_normals_unet_learns_both_heads():
    torch.manual_seed(0)
    frame = render_scene(1, size=(32, 32))
    x = _images(2)[1:]
    depth_gt = torch.from_numpy(frame["depth"])[None, None]
    normals_gt = torch.from_numpy(frame["normals"])[None]
    model = build_model("depth_normals_unet", 4, **TINY["unet"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        out = model(x)
        return l1_depth_loss(out["depth"], depth_gt), angular_normal_loss(out["normals"], normals_gt)

    with torch.no_grad():
        depth0, angle0 = (v.item() for v in losses())
    for _ in range(100):
        depth_loss, angle_loss = losses()
        optimizer.zero_grad()
        (depth_loss + angle_loss).backward()
        optimizer.step()
    with torch.no_grad():
        depth1, angle1 = (v.item() for v in losses())
    assert depth1 < 0.3 * depth0 and angle1 < math.radians(15) < angle0, (depth0, depth1, angle0, angle1)


# -- errors -------------------------------------------------------------------------------------------------------
def test_build_errors_name_the_options():
    tiny = TINY["unet"]
    with pytest.raises(ConfigError, match="depth_activation must be one of 'log', 'softplus'"):
        build_model("depth_unet", 1, depth_activation="exp", **tiny)
    with pytest.raises(ConfigError, match="num_classes must be 1"):
        build_model("depth_unet", 3, **tiny)
    with pytest.raises(ConfigError, match="num_classes must be 4"):
        build_model("depth_normals_unet", 1, **tiny)
    with pytest.raises(ConfigError, match="num_classes must be 3"):
        build_model("normals_unet", 4, **tiny)
    with pytest.raises(ConfigError, match="min_depth"):
        build_model("depth_unet", 1, min_depth=0.0, **tiny)
    with pytest.raises(ConfigError, match="init_depth"):
        build_model("depth_unet", 1, init_depth=1e-4, **tiny)
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("normals_unet", 3, depth_activation="log", **tiny)  # no depth head, no depth options
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("depth_fcn8s", 1, variant=16)  # fixed by the base's name
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("depth_unet", 1, base_channel=4)  # the base's options are checked
    with pytest.raises(ValueError, match="'depth', 'normals', 'depth\\+normals'"):
        DenseRegressionModel("unet", "depth+normal", **tiny)
    with pytest.raises(ValueError, match="semantic"):
        DenseRegressionModel("click_unet", "depth", **tiny)


def test_pixelwise_train_refuses_a_dense_model_with_a_clear_message(tiny_dataset, tmp_path, capsys):
    from pixelwise.cli import main

    assert main(["train", "--data", str(tiny_dataset), "--model", "depth_unet", "--out", str(tmp_path / "run"),
                 "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "depth_unet is a depth model" in err and "build_model" in err
    assert not (tmp_path / "run").exists()
