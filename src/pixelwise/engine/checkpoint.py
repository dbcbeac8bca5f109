"""Checkpoints: one dict per file, written atomically, read with ``weights_only=True``.

Keys: ``version``, ``model`` (name), ``model_kwargs``, ``num_classes``, ``in_channels``, ``classes``, ``palette``,
``ignore_index``, ``mean``, ``std``, ``input_scale``, ``config``, ``model_state``, ``optimizer_state``,
``scheduler_state``, ``rng_state``, ``epoch``, ``step``, ``metrics``, ``best_miou``.
Only tensors, numbers, strings, lists and dicts are stored, so ``torch.load(weights_only=True)`` reads every one:
a checkpoint cannot execute code when it is opened.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelwise.errors import CheckpointError

CHECKPOINT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, flushed, then ``os.replace``.
    A crash midway leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"version": CHECKPOINT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a pixelwise checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch file, or not a pixelwise checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a non-torch file fails deep in the unpickler with any of a dozen exception types
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"cannot read checkpoint {path}: {reason} (truncated or not a pixelwise checkpoint?)"
        ) from e
    if not isinstance(state, dict) or "model_state" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a pixelwise checkpoint (no model/model_state keys)")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer pixelwise (format {state['version']} > {CHECKPOINT_VERSION}): upgrade"
        )
    return state


def check_classes(state: dict[str, Any], classes: list[str], source: str, path: str | Path = "checkpoint") -> None:
    """Raise CheckpointError when a checkpoint's classes do not match a dataset's (count first, then names)."""
    ck = list(state["classes"])
    if len(ck) != len(classes):
        raise CheckpointError(
            f"checkpoint {path} was trained for {len(ck)} classes ({', '.join(ck[:12])}) but {source} has "
            f"{len(classes)} ({', '.join(classes[:12])}): use a checkpoint trained on this dataset"
        )
    if ck != list(classes):
        raise CheckpointError(
            f"checkpoint {path} and {source} name their classes differently ({ck} vs {list(classes)}): "
            "the class ids would be misread"
        )


def get_rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors / plain lists (``weights_only``-safe)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "python": _plain(random.getstate()),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate(_tuple(state["python"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(x):
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _tuple(x):
    return tuple(_tuple(v) for v in x) if isinstance(x, list) else x
