"""PNG/JPEG request bodies → the pixels an image model's signature asks for (Pillow).

One image per body. It is converted only as far as the signature (``InputSignature.shape``,
``(H, W, C)``) says: to greyscale (C=1) or RGB (C=3), and resized (bilinear, as image-folder
datasets are) to W×H when its aspect ratio is the model's (datasets.image_fit, the rule batch prediction
follows too) — a photo of another aspect would be distorted, so it is refused with the expected shape.
Pixels keep the file's 0–255 scale, as image-folder datasets store them. Every bad body is an
``InvalidInput`` naming the problem; the caller runs this off the event loop.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from loopml.core.errors import InvalidInput
from loopml.datasets.image_fit import check_fits, expected_form

__all__ = ["decode_image_file", "IMAGE_FORMATS"]

IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}
MAX_PIXELS = 40_000_000  # checked from the header, before any pixel is decoded
_HIGH_DEPTH = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def decode_image_file(body: bytes, media_type: str, shape: Sequence[int] | None) -> np.ndarray:
    """One PNG/JPEG body → float32 (1, H, W, C) per ``shape`` (the model's (H, W, C))."""
    from PIL import Image

    fmt = IMAGE_FORMATS[media_type]
    if not shape:
        raise InvalidInput(f"this model's signature names no input shape, so a {fmt} body "
                           "cannot be fitted to it; send pixels as application/json")
    h, w, c = (list(int(d) for d in shape) + [1, 1, 1])[:3]
    if c not in (1, 3):
        raise InvalidInput(f"this model expects {expected_form(shape)}, which a {fmt} file does "
                           "not hold; send pixels as application/x-npy")
    try:
        image = Image.open(io.BytesIO(body), formats=[fmt])
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on garbage: all → 400
        raise InvalidInput(f"request body is not a readable {fmt} image "
                           f"({type(exc).__name__}: {exc})") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise InvalidInput(f"{fmt} image of {width}×{height} pixels is too large "
                               f"(limit {MAX_PIXELS:,} pixels); this model expects "
                               f"{expected_form(shape)}")
        check_fits((width, height), (h, w, c), f"{fmt} image")
        if image.mode in _HIGH_DEPTH:
            raise InvalidInput(f"{fmt} image has {image.mode} pixels (more than 8 bits); send "
                               f"an 8-bit image — this model expects {expected_form(shape)}")
        target = "L" if c == 1 else "RGB"
        try:
            if fmt == "JPEG":
                image.draft(target, (w, h))  # decode a large JPEG at a reduced scale: cheaper
            if image.mode in ("P", "PA", "LA", "La", "RGBa"):
                image = image.convert("RGBA")  # palette transparency, premultiplied alpha
            if image.mode != target:
                image = image.convert(target)
            if image.size != (w, h):
                image = image.resize((w, h), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
            raise InvalidInput(f"{fmt} image cannot be decoded ({type(exc).__name__}: "
                               f"{exc})") from None
    return pixels.reshape(1, h, w, c)
