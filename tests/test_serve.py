"""``pixelwise serve``: the API through FastAPI's test client (the served mask is ``pixelwise predict``'s, hostile
uploads get a 4xx, never a 500), the command line, and a bounded load test of the real server on loopback."""

from __future__ import annotations

import base64
import io
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.engine.inference import InferenceOptions
from pixelwise.engine.predict import predict_files
from pixelwise.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _need(module: str):
    """Import ``module``; skip without it, except under CI=true, where its absence is a failure."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is missing: pip install -e '.[test]' (CI needs the serve tests)")
        pytest.skip(f"{module} is not installed (pip install 'pixelwise[serve]' httpx)", allow_module_level=True)


_need("fastapi")
_need("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from pixelwise.serve import create_app  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from serve_load import image_bytes, run_load, serve  # noqa: E402

#: `pixelwise train` options of a tiny U-Net that, after 20 AdamW steps on 8 CamVid images (~3 s on one thread),
#: predicts several classes on a street scene: a mask worth looking at, in seconds.
TINY = ["--batch-size", "2", "--crop-size", "64", "64", "--quiet", "--workers", "0", "--set", "input_scale=0.5",
        "model_kwargs.base_channels=8", "model_kwargs.depth=3", "eval_batch_size=2", "optimizer=adamw", "lr=0.01"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, camvid_dir) -> Path:
    run = tmp_path_factory.mktemp("serve") / "run"
    assert main(["train", "--data", str(camvid_dir), "--out", str(run), "--steps", "20", *TINY,
                 "train_split=train[:8]", "val_split=val[:2]"]) == 0
    return run / "best.pt"


@pytest.fixture(scope="module")
def client(checkpoint):
    with TestClient(create_app(checkpoint, device="cpu")) as c:
        yield c


def _camvid(camvid_dir: Path, split: str = "val", k: int = 0) -> Path:
    return sorted((camvid_dir / "images" / split).iterdir())[k]


def _post(client, name: str, data: bytes, path: str = "/api/segment"):
    return client.post(path, files={"file": (name, data, "application/octet-stream")})


def _array(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.array(im)


def _exif_rotated(src: Path, out: Path) -> Path:
    """A JPEG of the top-left 150x200 of ``src`` tagged EXIF orientation 6 (viewers turn it 90 degrees)."""
    with Image.open(src) as im:
        exif = Image.Exif()
        exif[0x0112] = 6
        im.crop((0, 0, 200, 150)).save(out, format="JPEG", quality=90, exif=exif.tobytes())
    return out


@pytest.mark.parametrize("test_time", [None, InferenceOptions("slide", crop=(64, 64)), InferenceOptions(flip=True)],
                         ids=["whole", "slide", "flip"])
def test_served_outputs_are_predicts_outputs(checkpoint, camvid_dir, tmp_path, test_time):
    """The served class-id PNG is, byte for byte, the <stem>.png `pixelwise predict` writes for the same file (and
    the color mask and overlay hold its pixels), for a CamVid frame, a test frame and an EXIF-rotated JPEG."""
    crop = tmp_path / "crop.png"  # a PNG: predict reads it with torchvision's libpng, the server with Pillow's
    crop.write_bytes(image_bytes(_camvid(camvid_dir, "test", 5), (121, 163))[1])
    files = [_camvid(camvid_dir, "val"), crop, _exif_rotated(_camvid(camvid_dir), tmp_path / "rotated.jpg")]
    if test_time is not None:
        files = files[:1]
    predict_files(checkpoint, files, tmp_path / "pred", device="cpu", progress=False, test_time=test_time)
    with TestClient(create_app(checkpoint, device="cpu", test_time=test_time)) as client:
        for f in files:
            r = _post(client, f.name, f.read_bytes())
            assert r.status_code == 200, r.text
            body = r.json()
            mask = base64.b64decode(body["mask_png"])
            assert mask == (tmp_path / "pred" / f"{f.stem}.png").read_bytes()
            for kind in ("color", "overlay"):
                expected = _array((tmp_path / "pred" / f"{f.stem}_{kind}.png").read_bytes())
                assert np.array_equal(_array(base64.b64decode(body[f"{kind}_png"])), expected)
                png = _post(client, f.name, f.read_bytes(), f"/api/segment.png?kind={kind}")
                assert png.headers["content-type"] == "image/png"
                assert np.array_equal(_array(png.content), expected)
            png = _post(client, f.name, f.read_bytes(), "/api/segment.png?kind=mask")
            assert png.content == mask and png.headers["x-image-size"] == f"{body['width']}x{body['height']}"
            ids = _array(mask)
            assert (body["height"], body["width"]) == ids.shape
            counts = np.bincount(ids.ravel(), minlength=11)
            assert [c["pixels"] for c in body["classes"]] == counts.tolist()
            assert sum(c["share"] for c in body["classes"]) == pytest.approx(1.0)
            assert body["inference_ms"] > 0 and body["filename"] == f.name
            if f.name == "rotated.jpg":
                assert (body["width"], body["height"]) == (150, 200)  # the 200 x 150 crop, turned upright


def test_grayscale_checkpoint_reads_uploads_as_gray(tmp_path_factory, isbi_dir, camvid_dir, tmp_path):
    run = tmp_path_factory.mktemp("serve_gray") / "run"
    assert main(["train", "--data", str(isbi_dir), "--out", str(run), "--steps", "2", *TINY,
                 "train_split=train[:4]", "val_split=train[28:30]"]) == 0
    color = _camvid(camvid_dir)  # an RGB upload: read as gray, as `pixelwise predict` reads it
    predict_files(run / "best.pt", [color], tmp_path, device="cpu", progress=False)
    with TestClient(create_app(run / "best.pt", device="cpu")) as client:
        assert client.get("/api/info").json()["in_channels"] == 1
        body = _post(client, color.name, color.read_bytes()).json()
    assert base64.b64decode(body["mask_png"]) == (tmp_path / f"{color.stem}.png").read_bytes()
    assert np.array_equal(_array(base64.b64decode(body["overlay_png"])),
                          _array((tmp_path / f"{color.stem}_overlay.png").read_bytes()))


def test_info_health_page_and_openapi(client, checkpoint):
    from pixelwise.engine.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/api/info").json()
    assert info["model"] == "unet" and info["input_scale"] == 0.5 and info["in_channels"] == 3
    assert [c["name"] for c in info["classes"]] == state.card.classes
    assert info["palette"] == [list(c) for c in state.card.palette]
    assert info["classes"][3]["color"] == "#{:02x}{:02x}{:02x}".format(*state.card.palette[3])
    assert info["limits"] == {"max_upload_bytes": 20_000_000, "max_pixels": 40_000_000,
                              "formats": ["JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP"]}
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and 'id="overlay"' in page.text and 'id="legend"' in page.text
    assert "<script src" not in page.text and "https://" not in page.text  # self-contained: no network needed
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/health", "/api/info", "/api/segment", "/api/segment.png", "/api/instances"}
    segment = spec["paths"]["/api/segment"]["post"]
    assert segment["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("SegmentResponse")
    assert {"400", "413", "415", "422"} <= set(segment["responses"])
    fields = spec["components"]["schemas"]["SegmentResponse"]["properties"]
    assert {"width", "height", "classes", "mask_png", "overlay_png", "color_png", "inference_ms"} <= set(fields)
    png = spec["paths"]["/api/segment.png"]["post"]
    assert "image/png" in png["responses"]["200"]["content"]
    assert {p["name"] for p in png["parameters"]} == {"kind"}


def _png_claiming(width: int, height: int, idat: bytes = zlib.compress(b"\0" * 10)) -> bytes:
    """A PNG whose header (with valid CRCs) claims width x height RGB pixels, followed by ``idat``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


HOSTILE = {  # name: (file name, bytes or a function of the CamVid image's bytes, status, words of the message)
    "text": ("notes.txt", b"this is not an image\n" * 20, 415, "not an image"),
    "zero_bytes": ("empty.jpg", b"", 400, "empty (0 bytes)"),
    "truncated_jpeg": ("cut.jpg", lambda jpg: jpg[: len(jpg) // 2], 400, "truncated"),
    "jpeg_header_only": ("head.jpg", lambda jpg: jpg[:600], 400, "truncated or corrupt"),
    "corrupt_png": ("bad.png", _png_claiming(64, 64, b"garbage" * 30), 400, "cannot be decoded"),
    "gif": ("anim.gif", _gif(), 415, "JPEG, PNG, BMP, TIFF or WebP"),
    "over_max_pixels": ("big.png", _png_claiming(8000, 6000), 413, "8000 x 6000 = 48,000,000 pixels"),
    "decompression_bomb": ("bomb.png", _png_claiming(100_000, 100_000), 413, "decompression bomb"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_uploads_get_a_4xx_with_a_message(client, camvid_dir, case):
    name, data, status, words = HOSTILE[case]
    if callable(data):
        data = data(_camvid(camvid_dir).read_bytes())
    for path in ("/api/segment", "/api/segment.png?kind=overlay"):
        r = _post(client, name, data, path)
        assert r.status_code == status, r.text
        detail = r.json()["detail"]
        assert isinstance(detail, str) and words in detail, detail
        if data:
            assert name in detail
    assert client.get("/health").status_code == 200  # and the server carries on


def test_request_errors_are_4xx(client, camvid_dir):
    no_file = client.post("/api/segment", data={"image": "x"})
    assert no_file.status_code == 422 and "field 'file'" in no_file.json()["detail"]
    f = _camvid(camvid_dir)
    bad_kind = _post(client, f.name, f.read_bytes(), "/api/segment.png?kind=depth")
    assert bad_kind.status_code == 422 and "kind" in bad_kind.json()["detail"]
    not_multipart = client.post("/api/segment", content=b"raw bytes", headers={"content-type": "image/jpeg"})
    assert not_multipart.status_code == 422


def test_tiny_images_and_model_failures(checkpoint):
    one_pixel = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(one_pixel, format="PNG")
    app = create_app(checkpoint, device="cpu")
    with TestClient(app) as client:
        r = _post(client, "dot.png", one_pixel.getvalue())
        assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (1, 1)

        def broken(x):
            raise RuntimeError("Given input size: (8x0x0). Calculated output size: (8x0x0). Output size is too small")

        app.state.segmenter.predictor.model = broken  # what a model too deep for a tiny image raises
        r = _post(client, "dot.png", one_pixel.getvalue())
        assert r.status_code == 422 and "the model cannot segment a 1 x 1 image" in r.json()["detail"]


def test_limits(checkpoint, camvid_dir):
    f = _camvid(camvid_dir)
    data = f.read_bytes()  # 480 x 360, ~40 kB
    with TestClient(create_app(checkpoint, device="cpu", max_pixels=100_000)) as client:
        r = _post(client, f.name, data)
        assert r.status_code == 413 and "480 x 360 = 172,800 pixels" in r.json()["detail"]
        assert "at most 100,000 pixels" in r.json()["detail"]
    with TestClient(create_app(checkpoint, device="cpu", max_upload_bytes=len(data) - 1)) as client:
        # within the body cap (limit + the multipart slack): refused when the file is read
        r = _post(client, f.name, data)
        assert r.status_code == 413 and f"over {len(data) - 1:,} bytes" in r.json()["detail"]
        crop_name, crop = image_bytes(f, (60, 80))
        assert _post(client, crop_name, crop).status_code == 200
    with TestClient(create_app(checkpoint, device="cpu", max_upload_bytes=1000)) as client:
        big = data * 3  # 120 kB: over the body cap, refused from its Content-Length before it is read
        r = _post(client, f.name, big)
        assert r.status_code == 413 and "at most 1,000 bytes" in r.json()["detail"]
        # no Content-Length (chunked): counted as it arrives, refused once over the cap
        boundary = "xyz"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n').encode()
        chunks = iter([head] + [big[i : i + 8192] for i in range(0, len(big), 8192)] + [f"\r\n--{boundary}--\r\n"
                                                                                             .encode()])
        r = client.post("/api/segment", content=chunks,
                        headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413 and "at most 1,000 bytes" in r.json()["detail"]
    with pytest.raises(ConfigError, match="decompression-bomb"):
        create_app(checkpoint, device="cpu", max_pixels=10**9)
    with pytest.raises(ConfigError, match="alpha"):
        create_app(checkpoint, device="cpu", alpha=1.5)


def test_cli_errors(checkpoint, tmp_path, capsys, monkeypatch):
    assert main(["serve", "--checkpoint", str(tmp_path / "missing.pt"), "--port", "0"]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(checkpoint), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be positive" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    assert main(["serve", "--checkpoint", str(checkpoint)]) == 2
    assert "pip install 'pixelwise[serve]'" in capsys.readouterr().err


def test_load_on_loopback(checkpoint, camvid_dir):
    """The real `pixelwise serve` (a subprocess, one torch thread) answers 200 requests, 8 at a time, for a
    120x160 crop: no errors, one mask."""
    name, data = image_bytes(_camvid(camvid_dir), (120, 160))
    with serve(checkpoint, "--device", "cpu", "--quiet", threads=1) as url:
        assert url.startswith("http://127.0.0.1:")
        warm = run_load(url, name, data, requests=2, concurrency=1)
        assert not warm.errors, warm.errors
        result = run_load(url, name, data, requests=200, concurrency=8)
    print(f"\nserve load test: {result.summary()}")
    assert not result.errors, result.errors[:3]
    assert len(result.latencies) == 200 and len(result.masks | warm.masks) == 1
