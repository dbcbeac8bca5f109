"""The demo page of ``pixelwise serve`` in headless Chromium (Debian's ``chromium``, driven by playwright): a real
server subprocess on loopback, a real CamVid image uploaded through the page's file input, the overlay and the
legend checked in the browser. Without chromium or playwright the test skips, except under CI=true (.ci/run installs
chromium), where their absence is a failure."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from test_serve import checkpoint, serve  # noqa: F401  (the module-scoped tiny-U-Net fixture)

CHROMIUM = Path("/usr/bin/chromium")
# The machine has no network: without the background-networking flags Chromium stalls on its update and sync calls.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _sync_playwright():
    """playwright's ``sync_playwright``, or a skip (a failure under CI=true) naming what is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install -e '.[test]')"
    if missing is None and not CHROMIUM.is_file():
        missing = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test cannot run: {missing}")
        pytest.skip(missing)
    return sync_playwright


OVERLAY_LOADED = """() => {
  const img = document.getElementById("overlay");
  return img.complete && img.naturalWidth > 0;
}"""

LEGEND = """rows => rows.map(r => ({
  name: r.querySelector(".name").textContent,
  shown: r.querySelector(".share").textContent,
  share: Number(r.dataset.share),
  swatch: getComputedStyle(r.querySelector(".swatch")).backgroundColor,
}))"""

@contextmanager
def _page_after_upload(checkpoint, image, *options: str) -> Iterator[tuple[object, list[str]]]:
    """``pixelwise serve CHECKPOINT OPTIONS`` in a subprocess and its page in headless Chromium, ``image`` uploaded
    through the file input and the overlay loaded: yields ``(page, script_errors)``."""
    sync_playwright = _sync_playwright()
    with serve(checkpoint, "--device", "cpu", "--quiet", *options, threads=1) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            script_errors: list[str] = []
            page.on("pageerror", lambda e: script_errors.append(str(e)))
            page.goto(url)
            page.set_input_files("#file", str(image))
            page.wait_for_function(OVERLAY_LOADED, timeout=60_000)
            yield page, script_errors
        finally:
            browser.close()


def test_page_shows_mask_overlay_and_legend_after_an_upload(checkpoint, camvid_dir, tmp_path):  # noqa: F811
    from pixelwise.engine.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    image = sorted((camvid_dir / "images" / "val").iterdir())[0]  # 480 x 360
    with _page_after_upload(checkpoint, image) as (page, script_errors):
        assert page.title() == "pixelwise: unet"
        for img in ("overlay", "mask", "source"):
            size = page.evaluate(f"() => [{img}.naturalWidth, {img}.naturalHeight]")
            assert size == [480, 360], (img, size)
        rows = page.eval_on_selector_all("#legend tbody tr", LEGEND)
        assert [r["name"] for r in rows if r["share"] > 0]  # some class is present
        assert sorted(r["name"] for r in rows) == sorted(state.card.classes)
        assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-6)
        shown = [float(r["shown"].split()[0].lstrip("<")) for r in rows]  # "49.6 %", "<0.1 %"
        assert sum(shown) == pytest.approx(100.0, abs=0.1 * len(rows))
        assert [r["share"] for r in rows] == sorted((r["share"] for r in rows), reverse=True)
        for r in rows:
            color = state.card.palette[state.card.classes.index(r["name"])]
            assert r["swatch"] == "rgb({}, {}, {})".format(*color)
        status = page.inner_text("#status")
        assert re.search(r"480 . 360 pixels, inference \d+\.\d ms", status), status
        page.screenshot(path=str(tmp_path / "serve_page.png"), full_page=True)

        # an upload the server refuses: its message on the page, the earlier result left in place
        page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                              "buffer": b"this is not an image"}])
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        error = page.inner_text("#error")
        assert error.startswith("Error 415:") and "notes.txt" in error and "not an image" in error, error
        assert not script_errors, script_errors
    assert (tmp_path / "serve_page.png").stat().st_size > 10_000


def test_instance_page_shows_the_overlay_and_a_table_of_objects(tmp_path):
    from test_instance_task import _checkpoint

    _checkpoint(tmp_path / "maskrcnn.pt")
    image = tmp_path / "shapes.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(image)
    with _page_after_upload(tmp_path / "maskrcnn.pt", image) as (page, script_errors):
        assert page.evaluate("() => [overlay.naturalWidth, overlay.naturalHeight]") == [80, 60]
        assert page.is_hidden("#mask-figure") and page.inner_text("#legend-title") == "Objects"
        rows = page.eval_on_selector_all(
            "#legend tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
        status = page.inner_text("#status")
        assert re.search(rf"shapes.png: {len(rows)} objects, inference \d+\.\d ms", status), status
        assert rows and rows[0][0] == "#1" and rows[0][1] in ("disk", "square")
        scores = [float(r[2]) for r in rows]
        assert scores == sorted(scores, reverse=True)  # by descending score, as predict numbers them
        assert not script_errors, script_errors


MASK_SHOWN = """() => !document.getElementById("mask-figure").hidden && overlay.src.startsWith("data:image/png")
  && overlay.complete && overlay.naturalWidth > 0"""


def test_prompt_page_clicks_show_the_mask_and_save_writes_a_dataset(tmp_path):
    from test_segment import write_click_checkpoint, write_image

    from pixelwise.cli import main

    checkpoint = write_click_checkpoint(tmp_path / "click.pt")
    image = write_image(tmp_path / "cells.png", size=(120, 180))
    data = tmp_path / "labelled"
    with _page_after_upload(checkpoint, image, "--save-to", str(data)) as (page, script_errors):
        assert page.is_hidden("#mask-figure") and page.is_visible("#prompt-panel") and page.is_hidden("#legend-panel")
        shown = page.locator("#overlay").bounding_box()
        page.click("#overlay", position={"x": shown["width"] * 20.5 / 180, "y": shown["height"] * 30.5 / 120})
        page.wait_for_function(MASK_SHOWN, timeout=30_000)
        sizes = page.evaluate("() => [overlay.naturalWidth, overlay.naturalHeight, mask.naturalWidth]")
        assert sizes == [180, 120, 180]
        assert page.inner_text("#status").startswith("1 click: mask of")
        page.click("#overlay", button="right", position={"x": 5, "y": 5})  # a background point, no context menu
        page.wait_for_function("() => document.querySelectorAll('#clicks li').length === 2", timeout=30_000)
        items = page.eval_on_selector_all("#clicks li", "items => items.map(i => i.textContent)")
        assert items[0] == "object (20, 30)" and items[1].startswith("background (")
        page.fill("#class-name", "cell")
        page.click("#save")
        page.wait_for_selector("#saved:has-text('Saved cell')", timeout=30_000)
        assert not script_errors, script_errors
    assert (data / "classes.txt").read_text() == "background\ncell\n"
    mask = np.array(Image.open(data / "masks" / "train" / "cells.png"))
    assert mask.shape == (120, 180) and set(np.unique(mask)) <= {0, 1} and mask.any()
    assert main(["datasets", "check", str(data), "--quiet"]) == 0
