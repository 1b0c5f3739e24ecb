"""The model's input signature: one typed object read from loopml.json, the same for serving,
monitoring's decoder and batch prediction."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loopml.core.errors import InvalidInput
from loopml.models.signature import InputSignature


def test_from_manifest_of_each_kind():
    image = InputSignature.from_manifest({
        "kind": "image", "label_names": [0, 1], "input": {"name": "image", "dtype": "float32", "shape": [None, 28, 28, 1]},
        "features": {"kind": "image", "shape": [28, 28, 1], "mean": 0.1, "std": 0.3}})
    assert image == InputSignature(kind="image", shape=(28, 28, 1), dtype="float32", class_names=("0", "1"))
    assert image.describe() == "28x28 images with 1 channel"
    # an older/partial manifest: the shape from the input signature, (H, W) read as (H, W, 1)
    assert InputSignature.from_manifest({"kind": "image", "input": {"shape": [None, 8, 8]}}).shape == (8, 8, 1)

    table = InputSignature.from_manifest({
        "kind": "tabular", "label_column": "species", "features": {"kind": "tabular", "columns": [
            {"name": "size", "type": "numeric"}, {"name": "colour", "type": "categorical"}]}})
    assert table.columns == ("size", "colour") and not table.numeric_columns and table.label_column == "species"
    numeric = InputSignature.from_manifest({"kind": "tabular", "features": {"columns": [{"name": "x0", "type": "numeric"}]}})
    assert numeric.numeric_columns and numeric.describe() == "tabular rows with columns x0"

    text = InputSignature.from_manifest({"features": {"kind": "text", "text_column": "body"}}, kind="text")
    assert text.kind == "text" and text.text_column == "body" and text.shape is None and text.columns is None


def test_a_manifest_without_a_kind_is_refused():
    with pytest.raises(InvalidInput, match="unknown model kind"):
        InputSignature.from_manifest({})
    with pytest.raises(Exception):  # frozen: built once per loaded version, never changed
        InputSignature(kind="text").text_column = "x"  # type: ignore[misc]


def test_the_signature_imports_nothing_heavy():
    """The serving process and the API import it: no numpy, Keras, TensorFlow or SQLAlchemy."""
    code = ("import sys, loopml.models.signature; "
            "print(sorted(m for m in ('numpy', 'keras', 'tensorflow', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
