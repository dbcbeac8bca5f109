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
from dataclasses import dataclass
from importlib import resources
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

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


class InfoResponse(BaseModel):
    model: str = Field(description="the architecture's name (see `pixelwise models`)")
    task: str = Field(description="semantic (POST /api/segment) or instance (POST /api/instances)")
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


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong with the request")


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
    """What the routes read from ``app.state.serve``."""

    segmenter: Segmenter
    info: InfoResponse
    page: str
    max_upload_bytes: int
    max_pixels: int
    alpha: float


def create_app(
    checkpoint: str | Path | Predictor,
    device: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    test_time: InferenceOptions | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> FastAPI:
    """The FastAPI application of ``pixelwise serve`` (see the module docstring); the model is loaded here, once.

    Args:
        checkpoint: a ``pixelwise train`` checkpoint, or a :class:`~pixelwise.engine.predictor.Predictor` (then
            ``device`` and ``test_time`` are its own).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``...
        max_upload_bytes: the largest uploaded file, in bytes.
        max_pixels: the largest image, width x height in pixels; at most Pillow's decompression-bomb threshold
            ``PIL.Image.MAX_IMAGE_PIXELS``.
        test_time: inference mode and test-time augmentation, as for ``pixelwise predict``.
        alpha: weight of the mask color in the overlay, in [0, 1].

    Raises:
        ConfigError: a non-positive limit, ``max_pixels`` above the decompression-bomb threshold, ``alpha``
            outside [0, 1].
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
    if isinstance(checkpoint, Predictor):
        predictor = checkpoint
    else:
        predictor = Predictor.from_checkpoint(checkpoint, device)
        predictor.options = test_time or predictor.options
    name = Path(predictor.source).name if predictor.source else "(in memory)"
    card = predictor.card
    class_info = [ClassInfo(id=k, name=n, color=c) for k, (n, c) in enumerate(legend(card.classes, card.palette))]
    info = InfoResponse(
        model=card.model, task=card.task, checkpoint=name, num_classes=len(class_info), in_channels=card.in_channels,
        input_scale=card.input_scale, inference=predictor.options.describe(), device=str(predictor.device),
        classes=class_info, palette=card.palette, alpha=alpha,
        limits=LimitsInfo(max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, formats=list(ACCEPTED_FORMATS)),
    )
    segmenter = Segmenter(predictor)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        segmenter.close()

    from pixelwise import __version__

    app = FastAPI(
        title="pixelwise serve",
        version=__version__,
        description=f"Semantic segmentation with {card.model} ({len(class_info)} classes: "
                    f"{', '.join(card.classes)}). Upload an image as multipart/form-data in the field `file`.",
        lifespan=lifespan,
    )
    app.state.segmenter = segmenter
    app.state.serve = ServeState(segmenter, info, render_page(info), max_upload_bytes, max_pixels, alpha)
    app.add_middleware(BodyLimit, limit=max_upload_bytes + MULTIPART_SLACK, upload_limit=max_upload_bytes)
    app.add_exception_handler(UploadError, upload_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(router)
    return app


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


router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.serve.page)


@router.get("/health", response_model=HealthResponse, summary="liveness")
def health() -> HealthResponse:
    return HealthResponse()


@router.get("/api/info", response_model=InfoResponse, summary="the model, its classes and the upload limits")
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


# --------------------------------------------------------------------------------------------------------- the page


def render_page(info: InfoResponse) -> str:
    """The demo page (the package file ``pixelwise/static/serve.html``, inline CSS and JavaScript only: it must
    work with no network) with the model's details filled in."""
    classes = ", ".join(c.name for c in info.classes)
    values = {
        "__MODEL__": html.escape(info.model),
        "__CHECKPOINT__": html.escape(info.checkpoint),
        "__NUM_CLASSES__": str(info.num_classes),
        "__CLASSES__": html.escape(classes),
        "__INFERENCE__": html.escape(info.inference),
        "__DEVICE__": html.escape(info.device),
        "__MAX_BYTES__": str(info.limits.max_upload_bytes),
        "__MAX_MB__": f"{info.limits.max_upload_bytes / 1e6:g}",
        "__MAX_MP__": f"{info.limits.max_pixels / 1e6:g}",
        "__TASK__": info.task,
        "__API__": ("POST api/segment (JSON) &middot; POST api/segment.png?kind=mask|color|overlay"
                    if info.task == "semantic" else "POST api/instances (JSON)"),
    }
    text = resources.files("pixelwise").joinpath("static/serve.html").read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(key, value)
    return text
