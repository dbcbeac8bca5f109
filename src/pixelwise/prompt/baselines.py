"""Classical click models, the baselines of the interactive-segmentation tables: GrabCut and the random walker.

Each factory takes an image and returns a ``segment(clicks) -> bool (H, W)`` callable for
:func:`pixelwise.prompt.clicks.run_clicks`; each call segments from scratch from all clicks so far (neither model
keeps state between clicks). Both rows appear in the NoC tables since Xu et al. ("Deep Interactive Object
Selection", CVPR 2016).

- :func:`grabcut_segmenter`: GrabCut (Rother, Kolmogorov & Blake, "GrabCut: Interactive Foreground Extraction
  using Iterated Graph Cuts", SIGGRAPH 2004), OpenCV's ``cv2.grabCut``.
- :func:`random_walker_segmenter`: the random walker (Grady, "Random Walks for Image Segmentation", TPAMI 2006),
  scikit-image's ``segmentation.random_walker``.

Both packages are optional: ``pip install 'pixelwise[prompt-baselines]'``.

>>> from pixelwise.prompt import grabcut_segmenter, noc_summary, run_clicks
>>> ious = run_clicks(grabcut_segmenter(image), gt)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pixelwise.prompt.clicks import Click, _check_clicks, _paint_disk

__all__ = ["grabcut_segmenter", "random_walker_segmenter"]

_EXTRA = "pip install 'pixelwise[prompt-baselines]'"


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise ImportError(f"grabcut_segmenter needs OpenCV, which is not installed: {_EXTRA} "
                          f"(or pip install opencv-python-headless)") from e
    return cv2


def _import_random_walker() -> Callable[..., np.ndarray]:
    try:
        from skimage.segmentation import random_walker
    except ImportError as e:
        raise ImportError(f"random_walker_segmenter needs scikit-image, which is not installed: {_EXTRA} "
                          f"(or pip install scikit-image)") from e
    return random_walker


def _check_image(image: object) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"image must be uint8 (H, W, 3) RGB (or (H, W) grey), got {img.dtype} of shape "
                         f"{img.shape}: convert it first (e.g. np.asarray(PIL.Image.open(path).convert('RGB')))")
    return img


def _check_radius(radius: int, name: str = "radius") -> None:
    if radius < 0:
        raise ValueError(f"{name} must be >= 0 pixels, got {radius}")


def grabcut_segmenter(image: object, radius: int = 5, iterations: int = 5,
                      fg_radius: int | None = None) -> Callable[[list[Click]], np.ndarray]:
    """GrabCut (Rother, Kolmogorov & Blake, SIGGRAPH 2004) as a click model, with OpenCV's ``cv2.grabCut``.

    Each call labels the image for ``cv2.GC_INIT_WITH_MASK`` and runs ``iterations`` rounds of GMM fitting and
    graph cut:

    - every pixel starts as probable background (``GC_PR_BGD``);
    - a disk of ``fg_radius`` pixels around each positive click is probable foreground (``GC_PR_FGD``);
      ``fg_radius`` defaults to ``max(2 * radius, round(min(H, W) / 8))``, an eighth of the short side: a click
      says "the object is around here" but not how big it is;
    - the click disks themselves (``radius`` pixels) are sure foreground (``GC_FGD``, positive clicks) or sure
      background (``GC_BGD``, negative clicks), painted in click order so a later click wins where disks overlap.

    The mask is the pixels labelled ``GC_FGD`` or ``GC_PR_FGD`` after the cut. grabCut needs a sample of each side
    and raises without one; when the labelling has no foreground pixel (no positive click yet) or no background
    pixel (the disks cover the image), the model returns that labelling's foreground without calling it (all
    False, or the whole image).

    Args:
        image: uint8 (H, W, 3) RGB image (a uint8 (H, W) grey one is stacked to three channels). OpenCV's
            order is BGR, but GrabCut's colour models treat the channels alike, so RGB input is fine.
        radius: radius in pixels of the sure disks around the clicks.
        iterations: GrabCut iterations per call.
        fg_radius: radius in pixels of the probable-foreground disk around each positive click (see above).

    Returns:
        ``segment(clicks) -> bool (H, W)``.

    Raises:
        ImportError: OpenCV is not installed (``pip install 'pixelwise[prompt-baselines]'``).
        ValueError: an image that is not uint8 (H, W, 3) / (H, W), a negative radius, ``iterations`` < 1; from
            ``segment``: a click outside the image.
    """
    cv2 = _import_cv2()
    img = _check_image(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    _check_radius(radius)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if fg_radius is None:
        fg_radius = max(2 * radius, round(min(h, w) / 8))
    _check_radius(fg_radius, "fg_radius")

    def segment(clicks: list[Click]) -> np.ndarray:
        _check_clicks(clicks, (h, w))
        mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        for c in clicks:
            if c.positive:
                _paint_disk(mask, c.y, c.x, fg_radius, cv2.GC_PR_FGD)
        for c in clicks:
            _paint_disk(mask, c.y, c.x, radius, cv2.GC_FGD if c.positive else cv2.GC_BGD)
        foreground = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        if foreground.all() or not foreground.any():
            return foreground
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        cv2.grabCut(img, mask, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)

    return segment


def random_walker_segmenter(image: object, radius: int = 5, beta: float = 130, mode: str = "bf",
                            tol: float = 1e-5) -> Callable[[list[Click]], np.ndarray]:
    """The random walker (Grady, "Random Walks for Image Segmentation", TPAMI 2006) as a click model, with
    scikit-image's ``segmentation.random_walker``.

    Seeds: label 1 on a disk of ``radius`` pixels around each positive click, label 2 around each negative one
    (painted in click order, a later click winning where disks overlap); while there is no negative click, the
    image border (the outermost rows and columns, except where a positive disk covers them) is background seed
    instead. Each unlabelled pixel takes the label a random walker from it most likely reaches first; the mask is
    label 1. With no positive click the mask is all False.

    Args:
        image: uint8 (H, W, 3) RGB image or uint8 (H, W) grey; scaled to [0, 1] floats, colour as the channel
            axis.
        radius: radius in pixels of the seed disks.
        beta: the edge-weight penalty of ``random_walker`` (its default, 130): the larger, the more an intensity
            step stops the walk.
        mode: ``random_walker``'s solver. ``"bf"`` (the default here): a direct sparse solve, exact, about 3 s
            for a 512x512 grey image on this project's 2-core CPU; ``"cg_j"``: Jacobi-preconditioned conjugate
            gradients to ``tol``, about 9 s at the same image with ``tol`` 1e-5 (scikit-image's default tolerance,
            1e-3, lets the probabilities of a noisy image stray past [0, 1] and warn on every call).
        tol: tolerance of the conjugate-gradient modes.

    Returns:
        ``segment(clicks) -> bool (H, W)``.

    Raises:
        ImportError: scikit-image is not installed (``pip install 'pixelwise[prompt-baselines]'``).
        ValueError: an image that is not uint8 (H, W, 3) / (H, W), a negative radius; from ``segment``: a click
            outside the image.
    """
    random_walker = _import_random_walker()
    img = _check_image(image)
    data = img.astype(np.float64) / 255.0
    channel_axis = -1 if img.ndim == 3 else None
    h, w = img.shape[:2]
    _check_radius(radius)

    def segment(clicks: list[Click]) -> np.ndarray:
        _check_clicks(clicks, (h, w))
        if not any(c.positive for c in clicks):
            return np.zeros((h, w), bool)
        markers = np.zeros((h, w), np.int32)
        if all(c.positive for c in clicks):
            markers[[0, -1], :] = 2
            markers[:, [0, -1]] = 2
        for c in clicks:
            _paint_disk(markers, c.y, c.x, radius, 1 if c.positive else 2)
        if not (markers == 2).any():  # the positive disks cover the whole image
            return markers == 1
        labels = random_walker(data, markers, beta=beta, mode=mode, tol=tol, channel_axis=channel_axis)
        return labels == 1

    return segment
