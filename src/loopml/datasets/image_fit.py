"""The one rule for fitting an image file to a model's input signature ``(H, W, C)``, shared by
batch prediction (datasets.formats, predict_input's submission check) and endpoint PNG/JPEG
bodies (serving.image_files): an image of the model's aspect ratio (within ``ASPECT_TOLERANCE``)
is resized; another would be distorted, so it is refused naming the expected shape."""

from __future__ import annotations

from typing import Sequence

from loopml.core.errors import InvalidInput

ASPECT_TOLERANCE = 0.05  # relative difference of width/height ratios still resized


def expected_form(shape: Sequence[int]) -> str:
    h, w, c = (list(shape) + [1, 1, 1])[:3]
    colour = {1: "greyscale", 3: "RGB"}.get(c, f"{c}-channel")
    return f"{w}×{h} {colour} images (input shape ({h}, {w}, {c}))"


def check_fits(size: tuple[int, int], shape: Sequence[int], what: str) -> None:
    """InvalidInput when an image of ``size`` (width, height) would be distorted to ``shape``;
    ``what`` names the image first in the message (``"PNG image"``, ``"image 'a.png'"``)."""
    width, height = size
    h, w = int(shape[0]), int(shape[1])
    if abs((width / max(height, 1)) / (w / h) - 1) > ASPECT_TOLERANCE:
        raise InvalidInput(f"{what} is {width}×{height}; this model expects {expected_form(shape)} — an "
                           "image of that aspect ratio is resized, another would be distorted: crop it first")
