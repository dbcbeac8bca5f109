"""``pixelwise segment`` and the prompt side of ``pixelwise serve``: one interface over the two promptable models,
reading prompts from the command line, drawing them, and adding prompted objects to a folder dataset.

- :func:`load_prompt_model`: a :class:`PromptModel` from a click model's checkpoint (``pixelwise train``, task
  ``"prompt"``) or from an official Segment Anything state dict (``sam_vit_b_01ec64.pth`` ...). The file is told
  apart by its content: a SAM state dict holds ``image_encoder.*`` tensors; anything else is read as a pixelwise
  checkpoint. A SAM's configuration is ``--sam-variant``'s, or read off the shapes of its tensors
  (:func:`sam_config_from_state_dict`), which names the released variants and also builds smaller test models.
- :func:`parse_point`, :func:`parse_box`, :func:`check_prompt`: prompts, checked against the image, with messages
  that name the fix.
- :func:`segment_file`: what ``pixelwise segment`` writes: ``<stem>_mask.png`` (0/255; with ``multimask`` one
  ``<stem>_mask_<k>.png`` per candidate), ``<stem>_overlay.png`` (mask, clicks, box) and ``<stem>.json``.
- :func:`add_to_folder_dataset`: an object's mask written into a dataset in pixelwise's folder layout
  (:mod:`pixelwise.data.folder`) under a class name, objects of one image accumulating in its mask.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from pixelwise.errors import CheckpointError, ConfigError, DatasetError

__all__ = ["MASK_COLOR", "PromptModel", "PromptResult", "add_to_folder_dataset", "check_class_name",
           "check_prompt", "dataset_id", "is_sam_checkpoint", "load_prompt_model", "parse_box", "parse_point",
           "prompt_overlay",
           "sam_config_from_state_dict", "segment_file"]

#: The mask's color in overlays (RGB).
MASK_COLOR = (30, 144, 255)
#: Colors of object (label 1) and background (label 0) clicks, and of the box.
OBJECT_COLOR, BACKGROUND_COLOR, BOX_COLOR = (0, 200, 0), (230, 20, 20), (255, 200, 0)
#: A tensor only SAM state dicts hold: how a SAM checkpoint is recognised.
_SAM_KEY = "image_encoder.patch_embed.proj.weight"
_CHECKPOINT_HINT = ("give a click model trained by pixelwise (task prompt, e.g. runs/click/best.pt) or an official "
                    "Segment Anything checkpoint (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth)")


# ------------------------------------------------------------------------------------------------------ the models


@dataclass
class PromptResult:
    """Candidate masks for one prompt.

    Attributes:
        masks: (C, H, W) bool, C = 1, or 3 for SAM with ``multimask``.
        scores: (C,) float32: SAM's predicted IoU, or a click model's mean probability inside its mask.
        feedback: the logits of the best candidate, (1, ...) float32, to pass as the next prompt's ``mask_input``.
        best: index of the candidate with the highest score.
    """

    masks: np.ndarray
    scores: np.ndarray
    feedback: np.ndarray
    best: int

    @property
    def mask(self) -> np.ndarray:
        """The best candidate, (H, W) bool."""
        return self.masks[self.best]

    @property
    def score(self) -> float:
        return float(self.scores[self.best])


class PromptModel:
    """A :class:`~pixelwise.prompt.click_predictor.ClickPredictor` or a
    :class:`~pixelwise.prompt.sam_predictor.SamPredictor` behind one interface.

    Args:
        predictor: the predictor (``set_image`` / ``predict``).
        kind: ``"click"`` or ``"sam"``.
        name: the model's name for people (``click_unet``, ``SAM vit_b``).
        source: the checkpoint file.
        in_channels: image channels the model takes (SAM: 3).
    """

    def __init__(self, predictor, kind: str, name: str, source: str | Path | None, in_channels: int) -> None:
        self.predictor, self.kind, self.name, self.in_channels = predictor, kind, name, in_channels
        self.source = str(source) if source is not None else None

    @classmethod
    def from_click_predictor(cls, predictor) -> "PromptModel":
        return cls(predictor, "click", predictor.card.model, predictor.source, predictor.card.in_channels)

    @property
    def takes_box(self) -> bool:
        return self.kind == "sam"

    @property
    def score_name(self) -> str:
        return "predicted IoU" if self.kind == "sam" else "mean probability inside the mask"

    @property
    def device(self) -> torch.device:
        return self.predictor.device if self.kind == "click" else self.predictor.model.device

    def set_image(self, image: torch.Tensor) -> None:
        """Encode uint8 (C, H, W) ``image`` (C = :attr:`in_channels`) for the following :meth:`predict` calls."""
        self.predictor.set_image(image.as_subclass(torch.Tensor))

    def image_state(self) -> tuple:
        """What :meth:`set_image` computed (SAM: the image embedding), to :meth:`restore_image` later without
        encoding the image again."""
        p = self.predictor
        return (p.features, p.original_size, p.input_size) if self.kind == "sam" else (p.image, p.original_size)

    def restore_image(self, state: tuple) -> None:
        p = self.predictor
        if self.kind == "sam":
            p.features, p.original_size, p.input_size = state
        else:
            p.image, p.original_size = state

    def predict(self, points: Sequence[Sequence[float]], labels: Sequence[int], box: Sequence[float] | None = None,
                mask_input: np.ndarray | None = None, multimask: bool = False) -> PromptResult:
        """Masks of the image set for the clicks ``points`` (N, 2) xy with ``labels`` (N,) 1 object / 0
        background, a ``box`` xyxy (SAM only) and the previous prompt's :attr:`PromptResult.feedback`."""
        coords = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        kwargs: dict[str, Any] = {"point_coords": coords if len(coords) else None,
                                  "point_labels": np.asarray(labels, dtype=np.int64) if len(coords) else None,
                                  "mask_input": mask_input}
        if self.kind == "sam":
            kwargs.update(box=None if box is None else np.asarray(box, dtype=np.float64), multimask_output=multimask)
        elif box is not None:
            raise ConfigError(f"{self.name} is a click model: it takes clicks only, not a box")
        masks, scores, logits = self.predictor.predict(**kwargs)
        best = int(np.argmax(scores))
        return PromptResult(masks, scores.astype(np.float32), logits[best][None].astype(np.float32), best)


def _peek(path: Path) -> Any:
    """The top-level object of a torch file, memory-mapped where the file allows it (cheap for a large SAM
    checkpoint); None when it cannot be read as one."""
    for kwargs in ({"mmap": True}, {}):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
        except Exception:  # noqa: BLE001  (a foreign file fails with any of a dozen types; the caller explains)
            continue
    return None


def is_sam_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a Segment Anything state dict (Meta's layout: ``image_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*`` tensors)."""
    path = Path(path)
    return path.is_file() and _is_sam_state_dict(_peek(path))


def _is_sam_state_dict(loaded: Any) -> bool:
    return isinstance(loaded, dict) and isinstance(loaded.get(_SAM_KEY), torch.Tensor)


def sam_config_from_state_dict(state_dict: dict[str, torch.Tensor], source: str | Path = "the state dict"):
    """The :class:`~pixelwise.prompt.sam.SamConfig` whose model has the tensors of ``state_dict``.

    Every size is in the shapes (widths, depths, the encoder's heads from its relative-position tables, the
    global-attention blocks from theirs, which span the whole token grid) except the decoder's heads, which every
    released SAM sets to 8. The pixel statistics are SAM's.

    Raises:
        SamCheckpointError: a tensor the sizes are read from is missing (name the variant: ``--sam-variant``).
    """
    from pixelwise.prompt.sam import SamCheckpointError, SamConfig

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise SamCheckpointError(f"{source} has image_encoder.* tensors but no {key!r}, which SAM's sizes are "
                                     "read from: name the variant with --sam-variant vit_b|vit_l|vit_h")
        return tuple(state_dict[key].shape)

    def count(prefix: str) -> int:
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        return len({m.group(1) for k in state_dict if (m := pattern.match(k))})

    embed, _, patch, _ = shape(_SAM_KEY)
    grid = shape("image_encoder.pos_embed")[1]
    depth = count("image_encoder.blocks.")
    tables = [shape(f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in range(depth)]
    global_blocks = tuple(i for i, t in enumerate(tables) if t[0] == 2 * grid - 1)
    windows = [(t[0] + 1) // 2 for t in tables if t[0] != 2 * grid - 1]
    return SamConfig(
        encoder_embed_dim=embed, encoder_depth=depth, encoder_num_heads=embed // tables[0][1],
        encoder_global_attn_indexes=global_blocks, image_size=grid * patch, patch_size=patch,
        window_size=windows[0] if windows else SamConfig.window_size,
        prompt_embed_dim=shape("image_encoder.neck.0.weight")[0],
        mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
        decoder_depth=count("mask_decoder.transformer.layers."),
        decoder_mlp_dim=shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        iou_head_hidden_dim=shape("mask_decoder.iou_prediction_head.layers.0.weight")[0],
        num_multimask_outputs=shape("mask_decoder.mask_tokens.weight")[0] - 1,
    )


def _load_sam(path: Path, state_dict: dict, device: str | torch.device, variant: str | None) -> PromptModel:
    from pixelwise.engine.inference import resolve_device
    from pixelwise.prompt.sam import SAM_VARIANTS, build_sam
    from pixelwise.prompt.sam_predictor import SamPredictor

    if variant is None:  # the sizes of the file's tensors; a released variant is called by its name
        config = sam_config_from_state_dict(state_dict, path)
        named = [v for v, c in SAM_VARIANTS.items() if c == config]
        variant = named[0] if named else None
        name = f"SAM {variant}" if variant else (f"SAM (ViT width {config.encoder_embed_dim}, depth "
                                                 f"{config.encoder_depth}, {config.image_size} px)")
        sam = build_sam(variant or config, checkpoint=path)
    else:
        sam, name = build_sam(variant, checkpoint=path), f"SAM {variant}"
    return PromptModel(SamPredictor(sam.to(resolve_device(device))), "sam", name, path, 3)


def load_prompt_model(checkpoint: str | Path, device: str | torch.device = "auto",
                      sam_variant: str | None = None) -> PromptModel:
    """The promptable model of ``checkpoint``: a pixelwise click model, or SAM (``sam_variant``, or the
    configuration read off the state dict's shapes).

    Raises:
        CheckpointError: a missing file; a file that is neither a pixelwise checkpoint nor a SAM state dict; a
            pixelwise checkpoint of another task (the message names the verb for it); a SAM state dict that is
            not ``sam_variant``'s. ConfigError: ``sam_variant`` with a pixelwise checkpoint.
    """
    from pixelwise.engine.predictor import Predictor

    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: {_CHECKPOINT_HINT}")
    loaded = _peek(path)
    if loaded is None:
        raise CheckpointError(f"{path} is neither a pixelwise checkpoint nor a SAM state dict (torch.load cannot "
                              f"read it): {_CHECKPOINT_HINT}")
    if _is_sam_state_dict(loaded):
        return _load_sam(path, loaded, device, sam_variant)
    del loaded
    try:
        predictor = Predictor.from_checkpoint(path, device)
    except CheckpointError as e:
        raise CheckpointError(f"{path} is neither a pixelwise checkpoint nor a SAM state dict ({e}): "
                              f"{_CHECKPOINT_HINT}") from e
    if sam_variant is not None:
        raise ConfigError(f"--sam-variant is for SAM checkpoints; {path} is a pixelwise checkpoint "
                          f"({predictor.card.model}): leave --sam-variant out")
    if predictor.task != "prompt":
        raise CheckpointError(f"{path} holds a {predictor.task} model ({predictor.card.model}), which segments "
                              f"whole images without prompts: use `pixelwise predict --checkpoint {path} IMAGE "
                              f"--out DIR` (this command takes a click model or a SAM checkpoint)")
    return PromptModel.from_click_predictor(predictor)


# ----------------------------------------------------------------------------------------------------- the prompts


def _numbers(text: str, option: str, form: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not np.isfinite(values).all():
        raise ConfigError(f"{option} {text!r} is not {form}: comma-separated numbers in pixels, no spaces")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``"x,y"`` or ``"x,y,label"`` (label 1 = object, the default; 0 = background) -> ``(x, y, label)``."""
    form = "x,y or x,y,label (label 1 = object, 0 = background), e.g. --point 120,80 or --point 40,60,0"
    values = _numbers(text, "--point", form)
    if len(values) not in (2, 3) or (len(values) == 3 and values[2] not in (0, 1)):
        raise ConfigError(f"--point {text!r} is not {form}")
    return values[0], values[1], int(values[2]) if len(values) == 3 else 1


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x1,y1,x2,y2"`` -> the box's corners in pixels."""
    form = "x1,y1,x2,y2 (top-left and bottom-right corners), e.g. --box 10,20,200,180"
    values = _numbers(text, "--box", form)
    if len(values) != 4:
        raise ConfigError(f"--box {text!r} is not {form}")
    return values[0], values[1], values[2], values[3]


def check_prompt(points: Sequence[Sequence[float]], labels: Sequence[int], box: Sequence[float] | None,
                 size: tuple[int, int], model: PromptModel, image_name: str = "") -> None:
    """Raise ConfigError for a prompt ``model`` cannot take on an image of ``size`` (H, W): no prompt at all, a
    box for a click model, labels other than 0/1 or of another count, a point or box outside the image."""
    height, width = size
    image = f"the {width}x{height} image" + (f" {image_name}" if image_name else "")
    if box is not None and not model.takes_box:
        raise ConfigError(f"{model.name} is a click model: it takes clicks only, not a box; give points (x,y for "
                          "the object, x,y,0 for the background), or use a SAM checkpoint for a box")
    if not len(points) and box is None:
        raise ConfigError("the prompt is empty: give at least one point on the object"
                          + (" or a box" if model.takes_box else ""))
    if len(labels) != len(points) or any(label not in (0, 1) for label in labels):
        raise ConfigError(f"give one label per point, 1 (object) or 0 (background): {len(points)} points, labels "
                          f"{list(labels)}")
    for k, (x, y) in enumerate(points, 1):
        if not (np.isfinite([x, y]).all() and 0 <= x < width and 0 <= y < height):
            raise ConfigError(f"point {k} (x={x:g}, y={y:g}) is outside {image}: "
                              f"points need 0 <= x < {width} and 0 <= y < {height}, in pixels from the top-left "
                              "corner")
    if box is not None:
        x1, y1, x2, y2 = box
        if not (np.isfinite(box).all() and 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height):
            raise ConfigError(f"box {list(box)} does not fit {image}: it needs "
                              f"0 <= x1 <= x2 <= {width} and 0 <= y1 <= y2 <= {height}")


# ----------------------------------------------------------------------------------------------------- the outputs


def _rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) tensor or (H, W[, C]) array -> uint8 (H, W, 3)."""
    arr = image.permute(1, 2, 0).cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.ascontiguousarray(np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[..., :3])


def prompt_overlay(image: torch.Tensor | np.ndarray, mask: np.ndarray | None, points: Sequence[Sequence[float]] = (),
                   labels: Sequence[int] = (), box: Sequence[float] | None = None, alpha: float = 0.5) -> np.ndarray:
    """The image with the mask blended in :data:`MASK_COLOR`, object clicks as green dots, background clicks as
    red ones and the box as a rectangle: uint8 (H, W, 3)."""
    rgb = _rgb(image)
    if mask is not None:
        blended = (1 - alpha) * rgb[mask] + alpha * np.asarray(MASK_COLOR, dtype=np.float64)
        rgb[mask] = np.round(blended).astype(np.uint8)
    out = Image.fromarray(rgb)
    draw = ImageDraw.Draw(out)
    height, width = rgb.shape[:2]
    radius = max(3, round(0.012 * max(height, width)))
    if box is not None:
        draw.rectangle([float(v) for v in box], outline=BOX_COLOR, width=max(1, radius // 2))
    for (x, y), label in zip(points, labels):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                     fill=OBJECT_COLOR if label == 1 else BACKGROUND_COLOR, outline=(255, 255, 255),
                     width=max(1, radius // 3))
    return np.array(out)


def _save_png(array: np.ndarray, path: Path) -> Path:
    """Write ``array`` as a PNG through a temporary file and a rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def segment_file(model: PromptModel, image_path: str | Path, points: Sequence[tuple[float, float, int]],
                 box: Sequence[float] | None, out_dir: str | Path, multimask: bool = False) -> dict:
    """Segment the object that ``points`` ((x, y, label) each) and ``box`` pick out in one image file and write
    ``<stem>_mask.png`` (uint8 0/255; with ``multimask`` SAM's candidates as ``<stem>_mask_<k>.png``),
    ``<stem>_overlay.png`` (the best candidate) and ``<stem>.json``, whose dict is returned.

    Raises:
        ConfigError: a prompt the model cannot take (:func:`check_prompt`), ``multimask`` with a click model.
        DatasetError: an unreadable image.
    """
    from pixelwise.data.io import read_image

    image_path, out = Path(image_path), Path(out_dir)
    if multimask and model.kind != "sam":
        raise ConfigError(f"{model.name} is a click model: it gives one mask per prompt; leave out --multimask "
                          "(SAM gives several)")
    image = read_image(image_path, model.in_channels)
    height, width = image.shape[-2:]
    coords, labels = [(x, y) for x, y, _ in points], [label for _, _, label in points]
    check_prompt(coords, labels, box, (height, width), model, str(image_path))
    model.set_image(image)
    with torch.inference_mode():
        result = model.predict(coords, labels, box, multimask=multimask)
    out.mkdir(parents=True, exist_ok=True)
    stem = image_path.stem
    names = [f"{stem}_mask_{k}.png" for k in range(len(result.masks))] if multimask else [f"{stem}_mask.png"]
    masks = result.masks if multimask else result.mask[None]
    scores = result.scores if multimask else result.scores[result.best:result.best + 1]
    candidates = []
    for name, mask, score in zip(names, masks, scores):
        _save_png(mask.astype(np.uint8) * 255, out / name)
        area = int(mask.sum())
        candidates.append({"file": name, "score": round(float(score), 6), "area": area,
                           "area_fraction": round(area / (height * width), 6)})
    _save_png(prompt_overlay(image, result.mask, coords, labels, box), out / f"{stem}_overlay.png")
    summary = {
        "image": str(image_path), "width": int(width), "height": int(height), "checkpoint": model.source,
        "model": model.name,
        "points": [{"x": x, "y": y, "label": label} for x, y, label in points],
        "box": list(box) if box is not None else None,
        "score": model.score_name, "masks": candidates, "best": result.best if multimask else 0,
        "overlay": f"{stem}_overlay.png",
    }
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    return summary


# ------------------------------------------------------------------------------------------------ the dataset folder

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def check_class_name(name: str) -> str:
    """The class name without surrounding spaces; ConfigError for an empty one, one with a path separator or a
    line break (classes.txt holds one name a line), or one over 100 characters."""
    text = name.strip()
    if not text or len(text) > 100 or any(c in text for c in "/\\\n\r\t\0"):
        raise ConfigError(f"class name {name!r} cannot be used: give 1 to 100 characters with no path separator "
                          "(/ or \\) or line break")
    return text


def add_to_folder_dataset(root: str | Path, split: str, image_id: str, image: torch.Tensor, mask: np.ndarray,
                          class_name: str, new: bool) -> dict:
    """Add an object to a dataset in the folder layout (:mod:`pixelwise.data.folder`): the image as
    ``images/<split>/<image_id>.png``, the object's pixels painted with its class id in
    ``masks/<split>/<image_id>.png`` (uint8 class ids, 0 = background; objects saved in turn accumulate, a later
    one over an earlier one), and the class appended to ``classes.txt`` (created with ``background`` as class 0;
    ``palette.txt``, when the folder has one, gets a color for it).

    Args:
        new: the image id is new (an existing file of that id is not this image's: a ConfigError), else this
            image's earlier objects are in its mask.

    Returns:
        ``{"image", "mask", "classes"}`` paths, ``class_id`` and ``id``.
    """
    from pixelwise.data.folder import read_class_names
    from pixelwise.data.palette import default_palette

    root = Path(root)
    class_name = check_class_name(class_name)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise ConfigError(f"split name {split!r} cannot be used: letters, digits, _ and - only (e.g. train)")
    classes_file, palette_file = root / "classes.txt", root / "palette.txt"
    names = read_class_names(root) if classes_file.is_file() else ["background"]
    if class_name not in names:
        if len(names) >= 255:
            raise DatasetError(f"{classes_file} already lists 255 classes: class ids stop at 254 (255 is void)")
        names.append(class_name)
    class_id = names.index(class_name)
    image_dir, mask_dir = root / "images" / split, root / "masks" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    image_path, mask_path = image_dir / f"{image_id}.png", mask_dir / f"{image_id}.png"
    if new and (image_path.exists() or mask_path.exists()):
        raise ConfigError(f"{image_path} already exists: choose another image id")
    if mask_path.is_file():
        with Image.open(mask_path) as im:
            ids = np.array(im)
    else:
        ids = np.zeros(mask.shape, dtype=np.uint8)
    ids[mask] = class_id
    classes_file.parent.mkdir(parents=True, exist_ok=True)
    classes_file.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    if palette_file.is_file():
        from pixelwise.data.palette import read_palette

        colors = read_palette(palette_file)
        colors += default_palette(len(names))[len(colors):]
        palette_file.write_text("".join(f"{r} {g} {b}\n" for r, g, b in colors))
    if not image_path.is_file():
        rgb = image.permute(1, 2, 0).cpu().numpy()
        _save_png(rgb[..., 0] if rgb.shape[2] == 1 else rgb, image_path)
    _save_png(ids, mask_path)
    return {"id": image_id, "split": split, "class_id": class_id, "class_name": class_name,
            "image": str(image_path), "mask": str(mask_path), "classes": str(classes_file)}


def dataset_id(filename: str | None) -> str:
    """A file-system-safe id from an uploaded file's name (its stem, other characters as ``_``)."""
    stem = Path(filename or "image").stem
    return _SAFE.sub("_", stem).strip("._") or "image"
