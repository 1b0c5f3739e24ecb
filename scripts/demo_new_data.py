"""`make demo`, automation act: drop a zip of new labelled images where the trigger watches.

The images are new variants of MNIST training digits (shifted by up to 2 pixels, a little
thicker or thinner), written as PNGs in one folder per class (``7/new-00042.png``) and zipped,
like a labelling team's delivery. The zip is written under the artifact store's
``incoming/mnist/`` prefix (a local folder or S3, whatever LOOPML_ARTIFACT_URI says).

    python scripts/demo_new_data.py [COUNT] [KEY]
"""

from __future__ import annotations

import io
import sys
import zipfile

import numpy as np
from PIL import Image

from loopml.core.settings import load_settings
from loopml.datasets.service import load_version
from loopml.platform import Platform


def new_images(platform: Platform, count: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    content, splits = load_version(platform, platform.datasets.get("mnist", 1))
    rng = np.random.default_rng(seed)
    rows = rng.choice(splits["train"], size=count, replace=False)
    part = content.take(rows)
    images = part.images[..., 0].astype(np.int16)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        dy, dx = rng.integers(-2, 3, size=2)
        shifted = np.roll(np.roll(img, dy, axis=0), dx, axis=1)
        if rng.random() < 0.5:  # thicker strokes: max with a one-pixel shift
            shifted = np.maximum(shifted, np.roll(shifted, 1, axis=1))
        out[i] = shifted
    return np.clip(out, 0, 255).astype(np.uint8), np.asarray(part.labels)


def zip_png(images: np.ndarray, labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (img, label) in enumerate(zip(images, labels)):
            png = io.BytesIO()
            Image.fromarray(img, mode="L").save(png, format="PNG")
            zf.writestr(f"{label}/new-{i:05d}.png", png.getvalue())
    return buf.getvalue()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    key = sys.argv[2] if len(sys.argv) > 2 else "incoming/mnist/delivery-001.zip"
    platform = Platform(load_settings(), create_schema=False)
    try:
        images, labels = new_images(platform, count)
        data = zip_png(images, labels)
        platform.artifacts.put_bytes(key, data)
        classes = ", ".join(f"{c}:{n}" for c, n in zip(*np.unique(labels, return_counts=True)))
        print(f"wrote {count} new labelled images ({len(data) / 1024:.0f} KiB) to {key}  [{classes}]")
    finally:
        platform.close()


if __name__ == "__main__":
    main()
