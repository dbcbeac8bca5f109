"""Shared fixtures. Real data comes from ../shared/data (or $PIXELWISE_SHARED/data); without it real-data tests skip,
except under CI=true, where its absence is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pixelwise.data.synthetic import write_synthetic_folder

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--compile", action="store_true", help="run the tests marked compile (inductor, slow)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--compile"):
        return
    skip = pytest.mark.skip(reason="inductor compile tests run with --compile (make test-compile)")
    for item in items:
        if "compile" in item.keywords:
            item.add_marker(skip)


def shared_dir() -> Path:
    return Path(os.environ.get("PIXELWISE_SHARED", ROOT.parent / "shared"))


def _real(name: str) -> Path:
    path = shared_dir() / "data" / name
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: CI needs ../shared beside the repo (or PIXELWISE_SHARED)")
        pytest.skip(f"{path} not found (set PIXELWISE_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def camvid_dir() -> Path:
    return _real("camvid")


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    return _real("isbi2012_membrane")


@pytest.fixture(scope="session")
def mobilenet_v2_weights() -> Path:
    """ImageNet MobileNetV2 ``features.*`` state_dict in torchvision's layout (no classifier)."""
    path = shared_dir() / "weights" / "mobilenet_v2_imagenet_features_tvformat.pth"
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: CI needs ../shared beside the repo (or PIXELWISE_SHARED)")
        pytest.skip(f"{path} not found (set PIXELWISE_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def camvid_checkpoint(tmp_path_factory, camvid_dir) -> Path:
    """A small U-Net trained 2 steps on real CamVid at half resolution (seconds): real weights, class names,
    palette and input_scale for the tests of export, report and serve. Its run folder holds log.jsonl."""
    from pixelwise.cli import main

    run = tmp_path_factory.mktemp("camvid_checkpoint") / "run"
    assert main(["train", "--data", str(camvid_dir), "--out", str(run), "--steps", "2", "--batch-size", "2",
                 "--crop-size", "64", "64", "--quiet", "--workers", "0", "--set", "train_split=train[:4]",
                 "val_split=val[:2]", "input_scale=0.5", "model_kwargs.base_channels=8", "model_kwargs.depth=3",
                 "eval_batch_size=2"]) == 0
    return run / "best.pt"


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """8 train / 4 val / 4 test synthetic images of 48x48 in the folder layout."""
    return write_synthetic_folder(tmp_path / "tiny", {"train": 8, "val": 4, "test": 4}, image_size=(48, 48))


@pytest.fixture(autouse=True)
def _threads():
    # Two cores: keep intra-op threads fixed so float reductions are reproducible. OMP_NUM_THREADS=1 lets the
    # suite share the machine with a training run without the threads of both waiting on each other.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))
    yield
