"""Deterministic stratified train/validation/test splits (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loopml.core.errors import InvalidInput

SPLITS = ("train", "validation", "test")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    try:
        fr = np.asarray([float(f) for f in fractions], dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"split fractions must be 3 numbers, got {fractions!r}") from None
    if fr.shape != (3,) or not np.all(np.isfinite(fr)) or np.any(fr <= 0) or abs(fr.sum() - 1) > 1e-6:
        raise InvalidInput(
            f"split fractions must be 3 positive numbers summing to 1 (train, validation, test), "
            f"got {tuple(fractions)!r}"
        )
    return fr


def _allocate(n: int, fr: np.ndarray) -> np.ndarray:
    """Split n rows into 3 counts: largest remainder, then at least 1 per split when n >= 3."""
    raw = n * fr
    counts = np.floor(raw).astype(np.int64)
    rest = n - int(counts.sum())
    # stable order: biggest fractional part first, ties go to the earlier split (train)
    order = sorted(range(3), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    if n >= 3:
        for i in range(3):
            if counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] = 1
    return counts


def stratified_split(
    labels: np.ndarray, seed: int = 42, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, np.ndarray]:
    """Row indices per split, stratified by label.

    Every row lands in exactly one split; each class with >= 3 rows is in all three; each
    split's rows come in a seeded random order.
    Classes are visited in sorted order with one seeded generator, so the result depends
    only on (labels, seed, fractions).
    """
    fr = _check_fractions(fractions)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InvalidInput(f"labels must be 1-D, got shape {labels.shape}")
    if labels.shape[0] == 0:
        raise InvalidInput("cannot split an empty dataset (0 rows)")
    classes, inverse = np.unique(labels.astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in range(len(classes)):
        rows = np.flatnonzero(inverse == c)
        rows = rows[rng.permutation(rows.shape[0])]
        bounds = np.cumsum(_allocate(rows.shape[0], fr))
        for i, chunk in enumerate(np.split(rows, bounds[:2])):
            parts[i].append(chunk)
    # Each split in a seeded random order rather than sorted: sources are often sorted by class
    # (mnist, bbc-news), and "the first 10 test rows" should be a mixed sample, not ten zeros.
    out = {}
    for name, chunks in zip(SPLITS, parts):
        idx = np.concatenate(chunks).astype(np.int64)
        out[name] = idx[rng.permutation(idx.shape[0])]
    return out
