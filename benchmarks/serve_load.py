"""Load test of ``pixelwise serve`` on loopback: N requests, C at a time; latency percentiles, throughput, errors.

    python benchmarks/serve_load.py --checkpoint runs/unet_camvid/best.pt \\
        --image ../shared/data/camvid/images/test/0001TP_008550.jpg [--crop 120 160] [--requests 200] \\
        [--concurrency 8] [--endpoint json|png] [--threads 1] [--url http://127.0.0.1:8000/] [--no-publish]

Starts ``python -m pixelwise serve --port 0 --device cpu --quiet`` on 127.0.0.1 (unless ``--url`` names a running
server), waits for it to print its address, sends 3 warm-up requests, then ``--requests`` POSTs of the same image
from ``--concurrency`` client threads, each on its own keep-alive connection (``http.client``, standard library
only). ``--endpoint json`` posts to ``/api/segment`` (the mask, color mask and overlay as base64 PNGs in JSON),
``png`` to ``/api/segment.png?kind=mask``. Latency is a request's wall time at the client, from sending to the
last byte of the response; throughput is requests / wall time of the whole run. Every response must be 200 and carry
the same class-id mask, else the script exits with status 1. ``--threads`` sets the server's OMP_NUM_THREADS.

Prints a markdown table and writes it to benchmarks/results/serve_load.md (and between ``<!-- serve_load:start -->``
and ``<!-- serve_load:end -->`` in docs/benchmarks.md, if the markers are there) unless ``--no-publish``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import io
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serve(checkpoint: str | Path, *options: str, threads: int | None = None,
          timeout: float = 120.0) -> Iterator[str]:
    """Run ``python -m pixelwise serve --checkpoint CHECKPOINT --port 0 OPTIONS`` (127.0.0.1 unless OPTIONS say
    otherwise) in a subprocess and yield its base URL (``http://127.0.0.1:PORT/``) once it listens; the server is
    stopped (SIGTERM, then SIGKILL after 10 s) on leaving.

    Raises:
        RuntimeError: the server exits or prints no address within ``timeout`` seconds (its output is quoted).
    """
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "pixelwise", "serve", "--checkpoint", str(checkpoint), "--port", "0", *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()
    seen: list[str] = []

    def drain() -> None:  # keeps the pipe from filling while the server runs
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise RuntimeError(f"`{' '.join(cmd)}` printed no address (exit status {proc.poll()}):\n"
                                   + "".join(seen))
            seen.append(line)
            found = re.search(r"on (http://\S+/) ", line)
            url = found.group(1) if found else None
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def multipart(filename: str, data: bytes, field_name: str = "file") -> tuple[str, bytes]:
    """``(content_type, body)`` of a multipart/form-data request carrying ``data`` as the file ``filename``."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return f"multipart/form-data; boundary={boundary}", head + data + f"\r\n--{boundary}--\r\n".encode()


@dataclass
class LoadResult:
    """Latencies in seconds (one per successful request), error messages, the distinct masks (SHA-256 of the
    class-id PNG) and the run's wall time in seconds."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    masks: set[str] = field(default_factory=set)
    wall_s: float = 0.0
    requests: int = 0
    concurrency: int = 0

    def stats(self) -> dict[str, float]:
        """p50 / p90 / p99 / max / mean latency in milliseconds (linear interpolation between ranks) and
        throughput in requests per second."""
        ms = np.asarray(self.latencies) * 1000 if self.latencies else np.zeros(1)
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "max_ms": float(ms.max()),
                "mean_ms": float(ms.mean()), "throughput_rps": len(self.latencies) / max(self.wall_s, 1e-9)}

    def summary(self) -> str:
        s = self.stats()
        return (f"{self.requests} requests, {self.concurrency} at a time: p50 {s['p50_ms']:.1f} ms, p90 "
                f"{s['p90_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms; "
                f"{s['throughput_rps']:.1f} requests/s; {len(self.errors)} errors; {len(self.masks)} distinct mask(s)")


def run_load(url: str, filename: str, data: bytes, requests: int = 200, concurrency: int = 8,
             endpoint: str = "json", timeout: float = 120.0) -> LoadResult:
    """POST ``data`` as the file ``filename`` to the server at ``url`` ``requests`` times from ``concurrency``
    threads (one keep-alive connection each; a connection that fails is reopened). ``endpoint``: ``"json"``
    (``/api/segment``) or ``"png"`` (``/api/segment.png?kind=mask``). A non-200 status, an exception or a response
    without a mask counts as an error."""
    if endpoint not in ("json", "png"):
        raise ValueError(f"endpoint must be 'json' or 'png', got {endpoint!r}")
    parts = urlsplit(url)
    base = parts.path.rstrip("/")
    path = base + ("/api/segment" if endpoint == "json" else "/api/segment.png?kind=mask")
    content_type, body = multipart(filename, data)
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    result = LoadResult(requests=requests, concurrency=concurrency)
    lock = threading.Lock()
    todo = iter(range(requests))

    def worker() -> None:
        conn = None
        while True:
            with lock:
                if next(todo, None) is None:
                    break
            if conn is None:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
            start = time.perf_counter()
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                payload = response.read()
                seconds = time.perf_counter() - start
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}: {payload[:300]!r}")
                mask = base64.b64decode(json.loads(payload)["mask_png"]) if endpoint == "json" else payload
                digest = hashlib.sha256(mask).hexdigest()
            except Exception as e:  # every failure is counted, none stops the run
                with lock:
                    result.errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = None
                continue
            with lock:
                result.latencies.append(seconds)
                result.masks.add(digest)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - start
    return result


def image_bytes(path: str | Path, crop: tuple[int, int] | None = None) -> tuple[str, bytes]:
    """``(filename, bytes)`` of the image to post: the file as it is, or its top-left ``crop`` (H, W) as PNG."""
    path = Path(path)
    if crop is None:
        return path.name, path.read_bytes()
    from PIL import Image

    with Image.open(path) as im:
        buffer = io.BytesIO()
        im.convert("RGB").crop((0, 0, crop[1], crop[0])).save(buffer, format="PNG")
    return f"{path.stem}_{crop[0]}x{crop[1]}.png", buffer.getvalue()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="post the image's top-left H x W (PNG)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--endpoint", choices=["json", "png"], default="json")
    p.add_argument("--threads", type=int, help="the server's OMP_NUM_THREADS (default: inherited)")
    p.add_argument("--url", help="a running server to load instead of starting one")
    p.add_argument("--no-publish", action="store_true", help="print only; do not write benchmarks/results")
    args = p.parse_args()
    filename, data = image_bytes(args.image, tuple(args.crop) if args.crop else None)

    def measure(url: str) -> LoadResult:
        warm = run_load(url, filename, data, requests=3, concurrency=1, endpoint=args.endpoint)
        if warm.errors:
            raise SystemExit(f"the warm-up requests failed: {warm.errors[0]}")
        return run_load(url, filename, data, args.requests, args.concurrency, args.endpoint)

    if args.url:
        result = measure(args.url)
    else:
        with serve(args.checkpoint, "--device", "cpu", "--quiet", threads=args.threads) as url:
            result = measure(url)
    s = result.stats()
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        size = f"{im.size[0]}x{im.size[1]}"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _timing import machine  # noqa: E402  (imports torch: only here)

    endpoint = "/api/segment (JSON)" if args.endpoint == "json" else "/api/segment.png?kind=mask"
    threads = args.threads if args.threads is not None else os.environ.get("OMP_NUM_THREADS", "default")
    text = (
        "| requests | concurrency | p50 ms | p90 ms | p99 ms | max ms | mean ms | requests/s | errors |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {args.requests} | {args.concurrency} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {s['p99_ms']:.1f} | "
        f"{s['max_ms']:.1f} | {s['mean_ms']:.1f} | {s['throughput_rps']:.1f} | {len(result.errors)} |\n\n"
        f"`pixelwise serve` on loopback, {endpoint}; checkpoint {Path(args.checkpoint).name} "
        f"({Path(args.checkpoint).parent.name}), image {filename} ({size}, {len(data):,} bytes); latency at the "
        f"client from sending to the last byte; server threads: {threads}; client and server on {machine()}. "
        f"Command: `python benchmarks/serve_load.py {' '.join(sys.argv[1:])}`.\n"
    )
    print(text)
    if result.errors or len(result.masks) > 1:
        print(f"FAILED: {len(result.errors)} errors, {len(result.masks)} distinct masks; first errors: "
              f"{result.errors[:3]}", file=sys.stderr)
        return 1
    if not args.no_publish:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _publish import publish  # noqa: E402

        publish("serve_load", text)
        print("wrote benchmarks/results/serve_load.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
