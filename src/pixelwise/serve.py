"""``pixelwise serve``: a web page and an HTTP API that segment uploaded images with a trained checkpoint.

    pixelwise serve --checkpoint runs/unet_camvid/best.pt            # http://127.0.0.1:8000/

Endpoints (documented in ``/openapi.json``; ``/docs`` is FastAPI's Swagger page, whose scripts come from a CDN):

- ``GET /``: one self-contained page (no external scripts) to upload an image and see the color mask, the overlay
  and a legend of the classes with each one's share of the pixels.
- ``POST /api/segment``: multipart/form-data with the image in the field ``file`` -> JSON :class:`SegmentResponse`
  (size, per-class pixel counts and shares, the class-id mask, color mask and overlay as base64 PNGs).
- ``POST /api/segment.png?kind=mask|color|overlay``: the same upload -> one ``image/png``; ``mask`` is a palette
  PNG whose pixel values are the class ids.
- ``POST /api/instances`` (an instance model, e.g. ``maskrcnn``): the same upload -> JSON
  :class:`InstancesResponse` (each instance's class, score, box and area, the 16-bit instance-id PNG and the overlay
  as base64); the page then lists the objects. The semantic endpoints answer 409 on an instance server and back.
- ``GET /api/info``: the model and its task, its classes and palette, ``input_scale``, the inference mode and the
  upload limits.

A promptable model, a click model that ``pixelwise train`` wrote (task ``prompt``) or an official Segment Anything
checkpoint (``pixelwise serve --checkpoint sam_vit_b_01ec64.pth [--sam-variant vit_b] [--save-to DIR]``), gets a page
on which a left click marks the object and a right click the background, and instead of the endpoints above:

- ``POST /api/prompt/image``: the upload, encoded once (SAM's image encoder) -> JSON :class:`PromptImageResponse`
  (its ``image_id``, width and height). The server keeps the last ``max_images`` images with their embeddings.
- ``POST /api/prompt/predict``: JSON :class:`PromptRequest` (``image_id``, every click so far as ``points`` [[x, y],
  ...] and ``labels`` 1 object / 0 background; SAM: an optional ``box``) -> JSON :class:`PromptResponse` (score,
  area, the 0/255 mask and the overlay as base64 PNGs). The k-th click's mask is computed from the first k clicks
  with the (k-1)-th mask's logits fed back, as an interactive session does; the server keeps each image's history,
  so a request with fewer clicks (an undo) is answered from it and only a new click runs the model's decoder.
- ``POST /api/prompt/save``: JSON :class:`SaveRequest` (a prompt and a ``class_name``, ``split`` "train") -> the
  prompt's mask added to the ``--save-to`` folder dataset (:func:`pixelwise.prompt.segment.add_to_folder_dataset`:
  ``images/<split>/<id>.png``, the class ids in ``masks/<split>/<id>.png``, ``classes.txt`` with ``background``
  first); objects of one image accumulate in its mask. 409 without ``--save-to``.

Their errors are 4xx with ``{"detail": message}`` as well: 404 an unknown image id, 400 an empty prompt, a point or
box outside the image, a box for a click model, a class name with a path separator.
- ``GET /health``: ``{"status": "ok"}``.

An upload is read exactly as ``pixelwise predict`` reads a file (:func:`pixelwise.data.io.read_image`: EXIF
orientation applied, the decompression-bomb check, grayscale for a one-channel checkpoint) and runs through the same
:class:`~pixelwise.engine.predictor.Predictor` (normalisation, ``input_scale``, inference mode), so the served mask
PNG is byte for byte the ``<stem>.png`` that ``pixelwise predict`` writes for the same file, and the color mask
and overlay hold the pixels of its ``<stem>_color.png`` and ``<stem>_overlay.png`` (tested).

Hostile uploads get a 4xx with ``{"detail": message}``, never a 500: an empty upload or a corrupt or truncated
image 400; a body over ``max_upload_bytes`` 413 (refused from its Content-Length before it is read, or counted as
it arrives when it has none); an image of more than ``max_pixels`` pixels 413, from its header, before it is
decoded; anything that is not a JPEG, PNG, BMP, TIFF or WebP 415; a request without the ``file`` field 422.

The model runs on one dedicated thread, one image at a time (a CPU forward pass already uses every intra-op
thread; on a GPU it keeps the memory of one image in flight); reading, coloring and PNG encoding run in FastAPI's
thread pool around it.
"""

from __future__ import annotations

import base64
import html
import io
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from fastapi import APIRouter, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from pixelwise.data.io import read_image
from pixelwise.engine.inference import InferenceOptions
from pixelwise.engine.instance import InstanceResult
from pixelwise.engine.predictor import Predictor
from pixelwise.errors import ConfigError, DatasetError, PixelwiseError
from pixelwise.prompt.segment import (
    MASK_COLOR,
    PromptModel,
    PromptResult,
    add_to_folder_dataset,
    check_class_name,
    check_prompt,
    dataset_id,
    is_sam_checkpoint,
    load_prompt_model,
    prompt_overlay,
)
from pixelwise.viz import DEFAULT_ALPHA, colorize, legend, overlay, save_class_png

__all__ = ["ACCEPTED_FORMATS", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES", "Segmenter", "ServeState",
           "UploadError", "create_app", "decode_upload", "render_page"]

#: Largest upload accepted by default, in bytes (20 MB).
DEFAULT_MAX_UPLOAD_BYTES = 20_000_000
#: Largest image accepted by default, in pixels (width x height): 40 megapixels.
DEFAULT_MAX_PIXELS = 40_000_000
#: Pillow format names an upload may have (MPO: the multi-picture JPEG many phone cameras write).
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP")
#: Room for the multipart envelope (boundaries, part headers) on top of ``max_upload_bytes``.
MULTIPART_SLACK = 64 * 1024

_FORMAT_NAMES = "JPEG, PNG, BMP, TIFF or WebP"


class UploadError(PixelwiseError):
    """An upload the server refuses; ``status`` is the HTTP status (4xx, or 503 when the device is out of memory)
    and the message says what is wrong with the upload."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------------- the API's data


class ClassInfo(BaseModel):
    id: int = Field(description="class id: the pixel value in the mask PNG")
    name: str
    color: str = Field(description="the class's palette color, '#rrggbb'", pattern="^#[0-9a-f]{6}$")


class ClassShare(ClassInfo):
    pixels: int = Field(description="pixels predicted as this class")
    share: float = Field(description="pixels / (width x height), in [0, 1]; the shares sum to 1")


class _ImageResponse(BaseModel):
    """What every answer about an uploaded image starts with."""

    filename: str | None = Field(description="the uploaded file's name, as the client sent it")
    width: int = Field(description="image width in pixels, after the EXIF orientation")
    height: int = Field(description="image height in pixels, after the EXIF orientation")
    inference_ms: float = Field(description="milliseconds of model inference (excluding decoding and encoding)")


class SegmentResponse(_ImageResponse):
    classes: list[ClassShare] = Field(description="every class of the model, in id order")
    mask_png: str = Field(description="base64 palette PNG (H, W) whose pixel values are the class ids")
    color_png: str = Field(description="base64 RGB PNG: each pixel in its class's color")
    overlay_png: str = Field(description="base64 RGB PNG: the color mask blended over the image")


class InstanceObject(BaseModel):
    id: int = Field(description="the instance's value in the instance-id PNG (1 = highest score)")
    label: int = Field(description="class label, 1..num_classes (0 is the background)")
    class_name: str = Field(description="the class's name")
    score: float = Field(description="the detector's class score, in [0, 1]")
    box: list[float] = Field(description="[x1, y1, x2, y2] in pixels")
    area: int = Field(description="pixels of the instance's mask")


class InstancesResponse(_ImageResponse):
    instances: list[InstanceObject] = Field(description="the detected instances, by descending score")
    instances_png: str = Field(description="base64 16-bit PNG (H, W): 0 background, j the j-th instance")
    overlay_png: str = Field(description="base64 RGB PNG: each instance's mask, box and label over the image")


class LimitsInfo(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    formats: list[str] = Field(description="Pillow names of the accepted image formats")


class PromptInfo(BaseModel):
    takes_box: bool = Field(description="whether prompts may hold a box (SAM) or clicks only (a click model)")
    score: str = Field(description="what a mask's score is")
    save_to: str | None = Field(description="the folder dataset POST /api/prompt/save writes to (None: no saving)")
    max_images: int = Field(description="uploaded images kept; an older one's id is forgotten")


class InfoResponse(BaseModel):
    model: str = Field(description="the architecture's name (see `pixelwise models`)")
    task: str = Field(description="semantic (POST /api/segment), instance (POST /api/instances) or prompt (a click "
                                  "model or SAM: POST /api/prompt/image, /api/prompt/predict, /api/prompt/save)")
    checkpoint: str = Field(description="the checkpoint's file name")
    num_classes: int
    in_channels: int = Field(description="1: uploads are read as grayscale; 3: as RGB")
    input_scale: float = Field(description="the model sees images resized by this factor")
    inference: str = Field(description="whole image or sliding window, test-time augmentation")
    device: str
    classes: list[ClassInfo]
    palette: list[list[int]] = Field(description="(R, G, B) of each class id")
    alpha: float = Field(description="weight of the mask color in the overlay")
    limits: LimitsInfo
    prompt: PromptInfo | None = Field(None, description="task prompt: what prompts the model takes, where saves go")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong with the request")


class PromptImageResponse(BaseModel):
    image_id: str = Field(description="the id to send with the image's prompts")
    filename: str | None = Field(description="the uploaded file's name, as the client sent it")
    width: int
    height: int
    embed_ms: float = Field(description="milliseconds to encode the image (SAM's image encoder), done once")


class PromptRequest(BaseModel):
    image_id: str = Field(description="from POST /api/prompt/image")
    points: list[tuple[float, float]] = Field(default_factory=list, description="every click so far, in order: "
                                              "[x, y] in pixels from the top-left corner")
    labels: list[int] = Field(default_factory=list, description="one per point: 1 object, 0 background")
    box: tuple[float, float, float, float] | None = Field(None, description="SAM only: [x1, y1, x2, y2]")


class PromptResponse(BaseModel):
    image_id: str
    width: int
    height: int
    clicks: int = Field(description="points in the prompt")
    score: float = Field(description="the mask's score (see /api/info: prompt.score)")
    area: int = Field(description="pixels of the mask")
    mask_png: str = Field(description="base64 PNG (H, W), 255 in the mask and 0 elsewhere")
    overlay_png: str = Field(description="base64 RGB PNG: the mask, the clicks and the box over the image")
    inference_ms: float = Field(description="milliseconds of the model's prompt decoding (0 when cached)")
    cached: bool = Field(description="the mask of this very prompt was computed before (e.g. after an undo)")


class SaveRequest(PromptRequest):
    class_name: str = Field(description="the object's class; new names are appended to classes.txt")
    split: str = Field("train", description="the dataset split to write to")


class SaveResponse(BaseModel):
    id: str = Field(description="the image's id in the dataset: images/<split>/<id>.png")
    split: str
    class_id: int = Field(description="the object's pixel value in the mask")
    class_name: str
    image: str = Field(description="the image file written")
    mask: str = Field(description="the class-id mask file written (this image's saved objects so far)")
    classes: str = Field(description="the class names file")
    area: int = Field(description="pixels of this object")


_ERRORS = {
    400: {"model": ErrorResponse, "description": "empty, corrupt or truncated image"},
    413: {"model": ErrorResponse, "description": "upload over the size limit, or image over the pixel limit"},
    415: {"model": ErrorResponse, "description": f"not an image in a format this server reads ({_FORMAT_NAMES})"},
    422: {"model": ErrorResponse, "description": "no `file` field, or a bad query parameter"},
    409: {"model": ErrorResponse, "description": "the endpoint of the other task (semantic / instance)"},
}


# ------------------------------------------------------------------------------------------------- reading uploads


def decode_upload(data: bytes, filename: str | None, channels: int, max_pixels: int, workdir: Path) -> torch.Tensor:
    """Decode an uploaded image exactly as ``pixelwise predict`` reads a file.

    The header is checked first (format, size) from memory; the bytes are then written to ``workdir`` and read by
    :func:`pixelwise.data.io.read_image` (EXIF orientation, decompression-bomb check, color-mode conversion).

    Args:
        data: the uploaded file's bytes.
        filename: the client's name for it (only for messages).
        channels: 1 (grayscale) or 3 (RGB), the checkpoint's ``in_channels``.
        max_pixels: the largest width x height accepted.
        workdir: an existing private folder for the temporary file.

    Returns:
        ``tv_tensors.Image`` uint8 (channels, H, W).

    Raises:
        UploadError: 400 empty, corrupt or truncated; 413 more than ``max_pixels`` pixels or over Pillow's
            decompression-bomb limit; 415 not an image in :data:`ACCEPTED_FORMATS`.
    """
    name = repr(filename) if filename else "the upload"
    if not data:
        raise UploadError(400, f"the upload {name} is empty (0 bytes): choose an image file ({_FORMAT_NAMES})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel limit below is lower
            Image.init()  # every plugin (Image.open's first pass registers only the common ones, not MPO)
            formats = [f for f in ACCEPTED_FORMATS if f in Image.OPEN]
            with Image.open(io.BytesIO(data), formats=formats) as im:
                fmt, (width, height) = im.format, im.size
    except Image.DecompressionBombError as e:
        raise UploadError(413, f"the image {name} is refused as a possible decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        start = data[:16]
        raise UploadError(415, f"the upload {name} ({len(data):,} bytes, starting {start!r}) is not an image this "
                               f"server reads: upload a {_FORMAT_NAMES} file") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise UploadError(400, f"the upload {name} has a truncated or corrupt image header ({e})") from e
    if width * height > max_pixels:
        raise UploadError(413, f"the image {name} is {width} x {height} = {width * height:,} pixels; this server "
                               f"segments at most {max_pixels:,} pixels (pixelwise serve --max-pixels)")
    path = workdir / ("upload." + fmt.lower())
    path.write_bytes(data)
    try:
        return read_image(path, channels)
    except DatasetError as e:
        cause = e.__cause__
        if isinstance(cause, Image.DecompressionBombError):
            raise UploadError(413, f"the image {name} is refused as a possible decompression bomb ({cause})") from e
        detail = cause if cause is not None else e
        raise UploadError(400, f"the {fmt} image {name} cannot be decoded ({detail}): the file is truncated or "
                               "corrupt") from e


# ------------------------------------------------------------------------------------------------------- the model


class Segmenter:
    """A :class:`~pixelwise.engine.predictor.Predictor` run on one dedicated thread, one image at a time.

    Args:
        predictor: the checkpoint's model, card and inference options.

    Raises:
        CheckpointError: the checkpoint cannot be read or built.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.device = predictor.device
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _run(self, image: torch.Tensor) -> tuple[np.ndarray | InstanceResult, float]:
        start = time.perf_counter()
        with torch.inference_mode():
            result = self.predictor(image)
            pred = result.mask(0) if self.predictor.task == "semantic" else result
        return pred, 1000 * (time.perf_counter() - start)

    def __call__(self, image: torch.Tensor) -> tuple[np.ndarray | InstanceResult, float]:
        """Segment one image.

        Args:
            image: uint8 (C, H, W), C = the card's ``in_channels`` (as :func:`read_image` returns it).

        Returns:
            ``(pred, milliseconds)``: uint8 (H, W) class ids (an instance model: its
            :class:`~pixelwise.engine.instance.InstanceResult`) and the inference time.

        Raises:
            UploadError: 503 when the device runs out of memory, 422 when the model cannot take the image.
        """
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelwise-model")
            future = self._executor.submit(self._run, image)
        try:
            return future.result()
        except torch.cuda.OutOfMemoryError as e:
            raise UploadError(503, f"the {self.device} device ran out of memory on a {image.shape[-1]} x "
                                   f"{image.shape[-2]} image: try a smaller one") from e
        except RuntimeError as e:
            raise UploadError(422, f"the model cannot segment a {image.shape[-1]} x {image.shape[-2]} image "
                                   f"({str(e).splitlines()[0]})") from e

    def close(self) -> None:
        """Stop the model's thread once the image in flight is done (a later call starts a new one)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


# ------------------------------------------------------------------------------------------------ the prompt models


@dataclass
class _PromptImage:
    """An uploaded image, its embedding, and the masks of the clicks so far: ``steps[k]`` is the result of the
    first k + 1 clicks, each computed with the previous one's logits (RITM's and SAM's mask feedback)."""

    filename: str | None
    image: torch.Tensor
    state: tuple
    box: tuple | None = None
    steps: list[tuple[tuple, PromptResult]] = field(default_factory=list)
    saved: dict[str, str] = field(default_factory=dict)  # split -> its id in the dataset


class PromptImages:
    """The images uploaded to a prompt model's server, the last ``max_images``, encoded once each; one lock runs
    the model (and writes the dataset) for one request at a time.

    Args:
        model: the click model or SAM.
        max_images: images kept (each holds its embedding; SAM's is 4 MB).
        save_to: the folder dataset of :meth:`save`, or None.
    """

    def __init__(self, model: PromptModel, max_images: int, save_to: Path | None) -> None:
        self.model, self.max_images, self.save_to = model, max_images, save_to
        self.images: OrderedDict[str, _PromptImage] = OrderedDict()
        self.lock = threading.Lock()
        self._current: str | None = None  # whose embedding the model holds

    def add(self, image: torch.Tensor, filename: str | None) -> tuple[str, float]:
        """Encode ``image``; returns its id and the milliseconds it took."""
        with self.lock, _model_errors(image, self.model.device):
            start = time.perf_counter()
            with torch.inference_mode():
                self.model.set_image(image)
            ms = 1000 * (time.perf_counter() - start)
            image_id = secrets.token_hex(8)
            self.images[image_id] = _PromptImage(filename, image, self.model.image_state())
            self._current = image_id
            while len(self.images) > self.max_images:
                self.images.popitem(last=False)
        return image_id, ms

    def get(self, image_id: str) -> _PromptImage:
        entry = self.images.get(image_id)
        if entry is None:
            raise UploadError(404, f"unknown image id {image_id!r}: upload the image again (POST /api/prompt/image; "
                                   f"this server keeps the last {self.max_images} images)")
        self.images.move_to_end(image_id)
        return entry

    def predict(self, request: PromptRequest) -> tuple[_PromptImage, PromptResult, float, bool]:
        """The mask of the request's prompt: ``(image, result, milliseconds, cached)``."""
        with self.lock:
            return self._predict(request)

    def _predict(self, request: PromptRequest) -> tuple[_PromptImage, PromptResult, float, bool]:
        entry = self.get(request.image_id)
        height, width = entry.image.shape[-2:]
        points = [tuple(p) for p in request.points]
        with _bad_request():
            check_prompt(points, request.labels, request.box, (height, width), self.model)
        clicks = tuple((x, y, int(label)) for (x, y), label in zip(points, request.labels))
        box = tuple(request.box) if request.box is not None else None
        if box != entry.box:
            entry.steps, entry.box = [], box
        keep = 0  # the steps of an earlier request that begin this prompt (an undo, or one click more)
        while keep < min(len(entry.steps), len(clicks)) and entry.steps[keep][0] == clicks[: keep + 1]:
            keep += 1
        del entry.steps[keep:]
        if clicks and keep == len(clicks):
            return entry, entry.steps[-1][1], 0.0, True
        if self._current != request.image_id:
            self.model.restore_image(entry.state)
            self._current = request.image_id
        start = time.perf_counter()
        with _model_errors(entry.image, self.model.device), torch.inference_mode():
            if not clicks:  # a box alone
                result = self.model.predict([], [], box)
            for n in range(keep + 1, len(clicks) + 1):
                previous = entry.steps[-1][1].feedback if entry.steps else None
                result = self.model.predict([c[:2] for c in clicks[:n]], [c[2] for c in clicks[:n]], box,
                                            mask_input=previous, multimask=n == 1 and box is None and
                                            self.model.kind == "sam")
                entry.steps.append((clicks[:n], result))
        return entry, result, 1000 * (time.perf_counter() - start), False

    def save(self, request: SaveRequest) -> dict:
        """Add the mask of the request's prompt to the dataset ``save_to`` under ``class_name``."""
        if self.save_to is None:
            raise UploadError(409, "this server has nowhere to save: start it with a dataset folder, pixelwise serve "
                                   "--checkpoint ... --save-to DIR")
        with _bad_request():
            class_name = check_class_name(request.class_name)
        with self.lock:
            entry, result, _, _ = self._predict(request)
            if not result.mask.any():
                raise UploadError(400, "the mask is empty: click on the object until the mask covers it, then save")
            image_id = entry.saved.get(request.split)
            new = image_id is None
            if new:  # the upload's file name, made unique in the split
                base = dataset_id(entry.filename)
                taken = {p.stem for d in ("images", "masks") for p in (self.save_to / d / request.split).glob("*")}
                image_id = next(f"{base}_{k}" if k > 1 else base for k in range(1, len(taken) + 2)
                                if (f"{base}_{k}" if k > 1 else base) not in taken)
            with _bad_request():
                written = add_to_folder_dataset(self.save_to, request.split, image_id, entry.image, result.mask,
                                                class_name, new)
            entry.saved[request.split] = image_id
        return {**written, "area": int(result.mask.sum())}


@contextmanager
def _bad_request() -> Iterator[None]:
    """Turn a ConfigError or DatasetError (a bad prompt, class name or split) into a 400."""
    try:
        yield
    except (ConfigError, DatasetError) as e:
        raise UploadError(400, str(e)) from e


@contextmanager
def _model_errors(image: torch.Tensor, device) -> Iterator[None]:
    """Turn the model's failures into 503 (out of memory) and 422 (it cannot take the image or prompt)."""
    size = f"{image.shape[-1]} x {image.shape[-2]}"
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        raise UploadError(503, f"the {device} device ran out of memory on a {size} image: try a smaller one") from e
    except (RuntimeError, ValueError) as e:
        if isinstance(e, PixelwiseError):
            raise
        raise UploadError(422, f"the model cannot segment this {size} image with this prompt "
                               f"({(str(e).splitlines() or [type(e).__name__])[0]})") from e


def _png(array: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes. zlib level 3, not Pillow's 6: a third of the time on photographs for a file
    about 1 % larger; the pixels are those of predict_files' ``<stem>_color.png`` and ``<stem>_overlay.png``."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


# -------------------------------------------------------------------------------------------- the request body cap


class BodyLimit:
    """ASGI middleware: refuse (413) a POST/PUT/PATCH body over ``limit`` bytes without reading it. A declared
    Content-Length over the limit is refused at once (the server's HTTP parser holds the client to its
    Content-Length); a body without one (chunked) is read up to the limit and refused as soon as it passes it."""

    def __init__(self, app, limit: int, upload_limit: int) -> None:
        self.app, self.limit, self.upload_limit = app, limit, upload_limit

    async def _refuse(self, scope, receive, send, size: str) -> None:
        text = (f"the upload is {size}; this server takes uploads of at most {self.upload_limit:,} bytes "
                "(pixelwise serve --max-upload-mb)")
        await JSONResponse({"detail": text}, status_code=413, headers={"Connection": "close"})(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await JSONResponse({"detail": "bad Content-Length header"}, status_code=400)(scope, receive, send)
                return
            if length > self.limit:
                await self._refuse(scope, receive, send, f"{length:,} bytes")
                return
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send, f"over {self.limit:,} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ---------------------------------------------------------------------------------------------------------- the app


@dataclass
class ServeState:
    """What the routes read from ``app.state.serve``; ``prompts`` is the image store of a prompt model's server."""

    segmenter: Segmenter | None
    info: InfoResponse
    page: str
    max_upload_bytes: int
    max_pixels: int
    alpha: float
    prompts: "PromptImages | None" = None


def create_app(
    checkpoint: str | Path | Predictor | PromptModel,
    device: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    test_time: InferenceOptions | None = None,
    alpha: float = DEFAULT_ALPHA,
    save_to: str | Path | None = None,
    sam_variant: str | None = None,
    max_images: int = 8,
) -> FastAPI:
    """The FastAPI application of ``pixelwise serve`` (see the module docstring); the model is loaded here, once.

    Args:
        checkpoint: a ``pixelwise train`` checkpoint, an official SAM checkpoint, a
            :class:`~pixelwise.engine.predictor.Predictor` or a :class:`~pixelwise.prompt.segment.PromptModel` (then
            ``device`` and ``test_time`` are its own).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``...
        max_upload_bytes: the largest uploaded file, in bytes.
        max_pixels: the largest image, width x height in pixels; at most Pillow's decompression-bomb threshold
            ``PIL.Image.MAX_IMAGE_PIXELS``.
        test_time: inference mode and test-time augmentation, as for ``pixelwise predict``.
        alpha: weight of the mask color in the overlay, in [0, 1].
        save_to: a click model or SAM: the folder dataset that ``POST /api/prompt/save`` adds objects to.
        sam_variant: the variant of a SAM checkpoint (default: read off its tensors' shapes).
        max_images: a click model or SAM: the uploaded images (and their embeddings) kept.

    Raises:
        ConfigError: a non-positive limit, ``max_pixels`` above the decompression-bomb threshold, ``alpha``
            outside [0, 1], ``save_to`` for a model that takes no prompts.
        CheckpointError: the checkpoint cannot be read or built.
    """
    if max_upload_bytes < 1:
        raise ConfigError(f"the upload limit must be at least 1 byte, got {max_upload_bytes}")
    bomb = Image.MAX_IMAGE_PIXELS
    if max_pixels < 1 or (bomb and max_pixels > bomb):
        raise ConfigError(f"the pixel limit must be in 1..{bomb:,} (Pillow's decompression-bomb threshold, "
                          f"PIL.Image.MAX_IMAGE_PIXELS), got {max_pixels:,}" if bomb else
                          f"the pixel limit must be at least 1, got {max_pixels}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"the overlay alpha must be in [0, 1], got {alpha}")
    if isinstance(checkpoint, (Predictor, PromptModel)) or getattr(checkpoint, "task", None) == "prompt":
        predictor = checkpoint
    elif sam_variant is not None or is_sam_checkpoint(checkpoint):
        predictor = load_prompt_model(checkpoint, device, sam_variant)
    else:
        predictor = Predictor.from_checkpoint(checkpoint, device)
        if isinstance(predictor, Predictor):
            predictor.options = test_time or predictor.options
    if not isinstance(predictor, (Predictor, PromptModel)):  # a ClickPredictor
        predictor = PromptModel.from_click_predictor(predictor)
    limits = LimitsInfo(max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, formats=list(ACCEPTED_FORMATS))
    name = Path(predictor.source).name if predictor.source else "(in memory)"
    if isinstance(predictor, PromptModel):
        if max_images < 1:
            raise ConfigError(f"max_images must be at least 1, got {max_images}")
        info = _prompt_info(predictor, name, alpha, limits, save_to, max_images)
        segmenter, prompts = None, PromptImages(predictor, max_images, Path(save_to) if save_to else None)
        description = (f"Promptable segmentation with {predictor.name}: upload an image to POST /api/prompt/image, "
                       "then POST its id and clicks to /api/prompt/predict.")
    else:
        if save_to is not None:
            raise ConfigError(f"--save-to is for click models and SAM; {name} holds a {predictor.task} model "
                              f"({predictor.card.model}), which takes no clicks: leave --save-to out")
        card = predictor.card
        class_info = [ClassInfo(id=k, name=n, color=c)
                      for k, (n, c) in enumerate(legend(card.classes, card.palette))]
        info = InfoResponse(
            model=card.model, task=card.task, checkpoint=name, num_classes=len(class_info),
            in_channels=card.in_channels, input_scale=card.input_scale, inference=predictor.options.describe(),
            device=str(predictor.device), classes=class_info, palette=card.palette, alpha=alpha, limits=limits,
        )
        segmenter, prompts = Segmenter(predictor), None
        description = (f"Semantic segmentation with {card.model} ({len(class_info)} classes: "
                       f"{', '.join(card.classes)}). Upload an image as multipart/form-data in the field `file`.")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if segmenter is not None:
            segmenter.close()

    from pixelwise import __version__

    app = FastAPI(title="pixelwise serve", version=__version__, description=description, lifespan=lifespan)
    app.state.segmenter = segmenter
    app.state.serve = ServeState(segmenter, info, render_page(info), max_upload_bytes, max_pixels, alpha, prompts)
    app.add_middleware(BodyLimit, limit=max_upload_bytes + MULTIPART_SLACK, upload_limit=max_upload_bytes)
    app.add_exception_handler(UploadError, upload_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(common)
    app.include_router(prompt_router if prompts is not None else router)
    return app


def _prompt_info(model: PromptModel, name: str, alpha: float, limits: LimitsInfo, save_to: str | Path | None,
                 max_images: int) -> InfoResponse:
    color = "#{:02x}{:02x}{:02x}".format(*MASK_COLOR)
    inference = "one mask per prompt: clicks" + (" and a box" if model.takes_box else "")
    return InfoResponse(
        model=model.name, task="prompt", checkpoint=name, num_classes=1, in_channels=model.in_channels,
        input_scale=1.0, inference=inference, device=str(model.device),
        classes=[ClassInfo(id=1, name="object", color=color)], palette=[list(MASK_COLOR)], alpha=alpha,
        limits=limits, prompt=PromptInfo(takes_box=model.takes_box, score=model.score_name,
                                         save_to=str(save_to) if save_to else None, max_images=max_images),
    )


async def upload_error(_request: Request, error: UploadError) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=error.status)


async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
    text = "; ".join(problems) or "invalid request"
    if any(tuple(item.get("loc", ()))[-1:] == ("file",) for item in error.errors()):
        text += " (send the image as multipart/form-data in the field 'file')"
    return JSONResponse({"detail": text}, status_code=422)


def _read_upload(serve: ServeState, upload: UploadFile) -> bytes:
    limit = serve.max_upload_bytes
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise UploadError(413, f"the upload {upload.filename!r} is over {limit:,} bytes, this "
                               "server's limit (pixelwise serve --max-upload-mb)")
    return data


def _require_task(serve: ServeState, task: str) -> None:
    if serve.info.task != task:
        other = "/api/instances" if serve.info.task == "instance" else "/api/segment or /api/segment.png"
        raise UploadError(409, f"this server runs a {serve.info.task} model ({serve.info.model}): POST to {other}")


def segment_upload(serve: ServeState, upload: UploadFile, kinds: tuple[str, ...]) -> tuple[dict, dict[str, bytes]]:
    """Decode ``upload``, segment it and encode the PNGs named in ``kinds`` (``mask``, ``color``, ``overlay``).

    Returns ``(meta, pngs)``: the JSON fields other than the PNGs, and the PNG bytes by kind."""
    _require_task(serve, "semantic")
    palette = serve.segmenter.predictor.palette
    data = _read_upload(serve, upload)
    with tempfile.TemporaryDirectory(prefix="pixelwise-serve-") as tmp:
        image = decode_upload(data, upload.filename, serve.info.in_channels, serve.max_pixels, Path(tmp))
        pred, ms = serve.segmenter(image)
        pngs = {}
        if "mask" in kinds:  # the very writer of predict_files: the same bytes as its <stem>.png
            pngs["mask"] = save_class_png(pred, Path(tmp) / "mask.png", palette).read_bytes()
    if "color" in kinds:
        pngs["color"] = _png(colorize(pred, palette))
    if "overlay" in kinds:
        pngs["overlay"] = _png(overlay(image, pred, palette, alpha=serve.alpha))
    counts = np.bincount(pred.ravel(), minlength=serve.info.num_classes)
    total = int(pred.size)
    classes = [ClassShare(id=c.id, name=c.name, color=c.color, pixels=int(counts[c.id]),
                          share=float(counts[c.id]) / total) for c in serve.info.classes]
    meta = {"filename": upload.filename, "width": int(pred.shape[1]), "height": int(pred.shape[0]),
            "classes": classes, "inference_ms": round(ms, 3)}
    return meta, pngs


def instances_upload(serve: ServeState, upload: UploadFile) -> dict:
    """Decode ``upload``, find its instances and encode the instance-id PNG (16-bit, the bytes of
    ``pixelwise predict``'s ``<stem>_instances.png``) and the overlay: the fields of :class:`InstancesResponse`."""
    _require_task(serve, "instance")
    data = _read_upload(serve, upload)
    with tempfile.TemporaryDirectory(prefix="pixelwise-serve-") as tmp:
        image = decode_upload(data, upload.filename, serve.info.in_channels, serve.max_pixels, Path(tmp))
        result, ms = serve.segmenter(image)
        ids_path = Path(tmp) / "instances.png"
        Image.fromarray(result.instance_ids(0)).save(ids_path)
        ids_png = ids_path.read_bytes()
    objects = [InstanceObject(id=o["id"], label=o["label"], class_name=o["class"], score=o["score"], box=o["box"],
                              area=o["area"]) for o in result.objects(0)]
    return {"filename": upload.filename, "width": int(image.shape[-1]), "height": int(image.shape[-2]),
            "instances": objects, "instances_png": base64.b64encode(ids_png).decode("ascii"),
            "overlay_png": base64.b64encode(_png(result.overlay(image, 0, alpha=serve.alpha))).decode("ascii"),
            "inference_ms": round(ms, 3)}


common = APIRouter()  # every server's routes
router = APIRouter()  # a semantic or instance model's
prompt_router = APIRouter()  # a click model's or SAM's


@common.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.serve.page)


@common.get("/health", response_model=HealthResponse, summary="liveness")
def health() -> HealthResponse:
    return HealthResponse()


@common.get("/api/info", response_model=InfoResponse, summary="the model, its classes and the upload limits")
def api_info(request: Request) -> InfoResponse:
    return request.app.state.serve.info


@router.post("/api/segment", response_model=SegmentResponse, responses=_ERRORS,
             summary="segment an image: class shares and the mask, color mask and overlay as base64 PNGs")
def api_segment(request: Request,
                file: UploadFile = File(..., description=f"the image ({_FORMAT_NAMES})")) -> SegmentResponse:
    meta, pngs = segment_upload(request.app.state.serve, file, ("mask", "color", "overlay"))
    encoded = {f"{k}_png": base64.b64encode(v).decode("ascii") for k, v in pngs.items()}
    return SegmentResponse(**meta, **encoded)


@router.post("/api/instances", response_model=InstancesResponse, responses=_ERRORS,
             summary="instance model: the instances of an image (class, score, box, area), their id PNG and overlay")
def api_instances(request: Request,
                  file: UploadFile = File(..., description=f"the image ({_FORMAT_NAMES})")) -> InstancesResponse:
    return InstancesResponse(**instances_upload(request.app.state.serve, file))


@router.post("/api/segment.png", response_class=Response, summary="segment an image: one PNG",
             responses={200: {"content": {"image/png": {}}, "description": "the PNG; headers X-Inference-Ms, "
                                                                             "X-Image-Size (WxH)"}, **_ERRORS})
def api_segment_png(
    request: Request,
    file: UploadFile = File(..., description=f"the image ({_FORMAT_NAMES})"),
    kind: Literal["mask", "color", "overlay"] = Query(
        "overlay", description="mask: palette PNG of class ids; color: color mask; overlay: mask over image"),
) -> Response:
    meta, pngs = segment_upload(request.app.state.serve, file, (kind,))
    headers = {"X-Inference-Ms": f"{meta['inference_ms']:.3f}", "X-Image-Size": f"{meta['width']}x{meta['height']}"}
    return Response(pngs[kind], media_type="image/png", headers=headers)


@prompt_router.post("/api/prompt/image", response_model=PromptImageResponse, responses=_ERRORS,
                    summary="click model or SAM: upload an image, encoded once; its id goes with every prompt")
def api_prompt_image(request: Request,
                     file: UploadFile = File(..., description=f"the image ({_FORMAT_NAMES})")) -> PromptImageResponse:
    serve = request.app.state.serve
    data = _read_upload(serve, file)
    with tempfile.TemporaryDirectory(prefix="pixelwise-serve-") as tmp:
        image = decode_upload(data, file.filename, serve.info.in_channels, serve.max_pixels, Path(tmp))
    image_id, ms = serve.prompts.add(image, file.filename)
    return PromptImageResponse(image_id=image_id, filename=file.filename, width=int(image.shape[-1]),
                               height=int(image.shape[-2]), embed_ms=round(ms, 3))


@prompt_router.post("/api/prompt/predict", response_model=PromptResponse, responses={
    **_ERRORS, 404: {"model": ErrorResponse, "description": "unknown (or forgotten) image id"}},
    summary="the mask of an image's clicks so far (and SAM's box), each click refined from the previous mask")
def api_prompt_predict(request: Request, body: PromptRequest) -> PromptResponse:
    serve = request.app.state.serve
    entry, result, ms, cached = serve.prompts.predict(body)
    mask = result.mask
    over = prompt_overlay(entry.image, mask, body.points, body.labels, body.box, alpha=serve.alpha)
    return PromptResponse(
        image_id=body.image_id, width=int(mask.shape[1]), height=int(mask.shape[0]), clicks=len(body.points),
        score=result.score, area=int(mask.sum()), inference_ms=round(ms, 3), cached=cached,
        mask_png=base64.b64encode(_png(mask.astype(np.uint8) * 255)).decode("ascii"),
        overlay_png=base64.b64encode(_png(over)).decode("ascii"),
    )


@prompt_router.post("/api/prompt/save", response_model=SaveResponse, responses={
    **_ERRORS, 404: {"model": ErrorResponse, "description": "unknown (or forgotten) image id"},
    409: {"model": ErrorResponse, "description": "the server was started without --save-to"}},
    summary="add the prompt's mask, as the class named, to the --save-to folder dataset")
def api_prompt_save(request: Request, body: SaveRequest) -> SaveResponse:
    return SaveResponse(**request.app.state.serve.prompts.save(body))


# --------------------------------------------------------------------------------------------------------- the page


def render_page(info: InfoResponse) -> str:
    """The demo page (the package file ``pixelwise/static/serve.html``, inline CSS and JavaScript only: it must
    work with no network) with the model's details filled in."""
    classes = ", ".join(c.name for c in info.classes)
    if info.prompt is not None:
        saving = f"saving to {info.prompt.save_to}" if info.prompt.save_to else "no saving (--save-to DIR)"
        summary = f"{html.escape(info.inference)} &middot; {html.escape(saving)}"
        api = "POST api/prompt/image &middot; POST api/prompt/predict &middot; POST api/prompt/save"
    else:
        summary = f"{info.num_classes} classes ({html.escape(classes)}) &middot; {html.escape(info.inference)}"
        api = ("POST api/segment (JSON) &middot; POST api/segment.png?kind=mask|color|overlay"
               if info.task == "semantic" else "POST api/instances (JSON)")
    values = {
        "__SUMMARY__": summary,
        "__MODEL__": html.escape(info.model),
        "__CHECKPOINT__": html.escape(info.checkpoint),
        "__DEVICE__": html.escape(info.device),
        "__MAX_BYTES__": str(info.limits.max_upload_bytes),
        "__MAX_MB__": f"{info.limits.max_upload_bytes / 1e6:g}",
        "__MAX_MP__": f"{info.limits.max_pixels / 1e6:g}",
        "__TASK__": info.task,
        "__API__": api,
    }
    text = resources.files("pixelwise").joinpath("static/serve.html").read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(key, value)
    return text
