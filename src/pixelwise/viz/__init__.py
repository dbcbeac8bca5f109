"""Visualisation of segmentation masks: color masks, overlays, palette PNGs and legends."""

from __future__ import annotations

from pixelwise.viz.colorize import DEFAULT_ALPHA, colorize, legend, overlay, save_class_png

__all__ = ["DEFAULT_ALPHA", "colorize", "legend", "overlay", "save_class_png"]
