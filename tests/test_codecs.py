"""Request/response codecs for real-time endpoints (loopml.serving.codecs): pure, fast."""

from __future__ import annotations

import io
import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopml.core.errors import CorruptArtifact, InvalidInput, UnsupportedFormat
from loopml.serving.codecs import decode, encode_predictions, error_body, media_type

KINDS = ("image", "text", "tabular")
COLUMNS = ["age", "city"]


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def j(value: object) -> bytes:
    return orjson.dumps(value)


# --------------------------------------------------------------------------- happy paths: image


@pytest.mark.parametrize("wrap", [lambda x: {"instances": x}, lambda x: {"inputs": x}, lambda x: x])
@pytest.mark.parametrize("shape", [(2, 4, 4), (2, 4, 4, 1), (2, 16)])
def test_image_json(wrap, shape):
    pixels = np.arange(np.prod(shape), dtype=np.int64).reshape(shape)
    raw, n = decode(j(wrap(pixels.tolist())), "application/json", "image", shape=[4, 4, 1])
    assert n == 2 and raw.dtype == np.float32 and raw.shape == shape
    np.testing.assert_array_equal(raw, pixels.astype(np.float32))


def test_content_type_parameters_case_and_missing():
    body = j({"instances": [[1, 2], [3, 4]]})
    for ct in (None, "", "Application/JSON; charset=UTF-8", "application/json;charset=latin-1"):
        raw, n = decode(body, ct, "image")
        assert n == 2 and raw.shape == (2, 2)
    assert media_type(" TEXT/CSV ; header=present") == "text/csv"


def test_image_npy_and_csv():
    arr = np.random.default_rng(0).integers(0, 255, (3, 4, 4, 1)).astype(np.uint8)
    raw, n = decode(npy(arr), "application/x-npy", "image", shape=[4, 4, 1])
    assert n == 3 and raw.dtype == np.float32
    np.testing.assert_array_equal(raw, arr.astype(np.float32))
    fortran = np.asfortranarray(np.arange(12, dtype=">f8").reshape(3, 4))
    raw, _ = decode(npy(fortran), "application/x-npy", "image")
    np.testing.assert_array_equal(raw, fortran)
    raw, n = decode(b"1,2,3,4\n5,6,7,8.5\n\n", "text/csv", "image", shape=[2, 2])
    assert n == 2 and raw.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8.5]]


# --------------------------------------------------------------------------- text


def test_text_all_content_types():
    assert decode(j(["a b", "c"]), "application/json", "text") == (["a b", "c"], 2)
    assert decode(j({"instances": [{"text": "x"}, "y"]}), None, "text") == (["x", "y"], 2)
    assert decode(j({"inputs": [{"body": "z"}]}), None, "text", text_column="body") == (["z"], 1)
    assert decode("héllo, world".encode(), "text/plain; charset=utf-8", "text") == \
        (["héllo, world"], 1)
    assert decode(b'first text\n"second, with comma"\n"multi\nline"\n', "text/csv", "text") == \
        (["first text", "second, with comma", "multi\nline"], 3)
    assert decode(npy(np.array(["a", "bc"])), "application/x-npy", "text") == (["a", "bc"], 2)


# --------------------------------------------------------------------------- tabular


def test_tabular_all_content_types():
    rows = [{"age": 30, "city": "Oslo"}, {"age": None, "city": "Rome"}]
    assert decode(j({"instances": rows}), "application/json", "tabular") == (rows, 2)
    assert decode(j([[30, "Oslo"], [None, "Rome"]]), None, "tabular", columns=COLUMNS) == (rows, 2)
    raw, n = decode(b"age,city\n30,Oslo\n,Rome\n", "text/csv", "tabular", columns=COLUMNS)
    assert n == 2 and raw == [{"age": 30.0, "city": "Oslo"}, {"age": None, "city": "Rome"}]
    raw, n = decode(npy(np.array([[1, 2.5], [3, 4]])), "application/x-npy", "tabular",
                    columns=["a", "b"])
    assert n == 2 and raw == [{"a": 1.0, "b": 2.5}, {"a": 3.0, "b": 4.0}]


# --------------------------------------------------------------------------- 4xx cases


def _err(cls, body, ct, kind, **kw):
    with pytest.raises(InvalidInput) as info:
        decode(body, ct, kind, **kw)
    assert type(info.value) is cls, info.value
    return info.value.message


@pytest.mark.parametrize("body,ct,kind,kw,needle", [
    (b'{"instances": [1, 2', None, "image", {}, "malformed JSON at position"),
    (b"", None, "text", {}, "empty"),
    (b'{"instances": []}', None, "image", {}, "empty list"),
    (b"[]", "text/plain", "text", {}, None),  # text/plain: one text, "[]" is fine
    (j([["a", "b"], ["c", "d"]]), None, "image", {}, "strings"),
    (j([["1", "2"]]), None, "image", {}, "strings"),  # numeric strings are not pixels either
    (j([[1, None]]), None, "image", {}, "null"),
    (j([[1, 2], [3]]), None, "image", {}, "ragged"),
    (b"1,2\n3\n", "text/csv", "image", {}, "ragged"),
    (j([[1e300, 1]]), None, "image", {}, "infinite"),
    (b"nan,1\n", "text/csv", "image", {}, "NaN"),
    (j([[1, 2]] * 11), None, "image", {"max_rows": 10}, "too many rows: 11 > 10"),
    (j(["abcdef"]), None, "text", {"max_text_chars": 5}, "too long: 6 characters > 5"),
    (b"abcdef", "text/plain", "text", {"max_text_chars": 5}, "too long"),
    (j([1, 2, 3, 4]), None, "image", {}, "wrap a single image"),
    (j([[1, 2], [3, 4]]), None, "image", {"shape": [2, 2, 1]}, "looks like ONE image"),
    (j([[1, 2, 3]]), None, "image", {"shape": [2, 2, 1]}, "expects (N, 2, 2, 1)"),
    (j({"instances": "hello"}), None, "text", {}, "must be a list of instances"),
    (j("hello"), None, "text", {}, "must be a list"),
    (j({"data": [1]}), None, "image", {}, '"instances" or "inputs"'),
    (j([1, "a"]), None, "text", {}, "text instance 0 must be a string"),
    (j({"age": 3}), None, "tabular", {}, "list of instances"),
    (j([[1, 2]]), None, "tabular", {}, "does not know the column order"),
    (j([[1]]), None, "tabular", {"columns": COLUMNS}, "expects 2 columns"),
    (j([{"a": [1]}]), None, "tabular", {}, "column 'a'"),
    (b"a,b\n", "text/csv", "text", {}, "quote texts containing commas"),
    (b"\xff\xfe", "text/csv", "text", {}, "not valid UTF-8"),
    (npy(np.array(["a"])), "application/x-npy", "image", {}, "must be numeric"),
    (npy(np.array([[1.0, np.nan]])), "application/x-npy", "image", {}, "NaN"),
    (npy(np.array([1, "x", None], dtype=object)), "application/x-npy", "image", {}, "pickled"),
    (npy(np.zeros((4, 3)))[:-5], "application/x-npy", "image", {}, "truncated"),
    (b"\x80\x04K\x01.", "application/x-npy", "image", {}, "not an .npy file"),
    (npy(np.zeros((3, 2)))[:6] + b"\x01\x00\x76\x00" + b"{'descr': '<f8', 'fortran_order': False,"
     b" 'shape': (10000000000000,), }".ljust(117) + b"\n", "application/x-npy", "image", {},
     "truncated"),  # a huge declared shape is refused before any allocation
    (npy(np.zeros((20, 2))), "application/x-npy", "image", {"max_rows": 10}, "too many rows"),
])
def test_bad_inputs_name_the_problem(body, ct, kind, kw, needle):
    if needle is None:
        assert decode(body, ct, kind, **kw) == (["[]"], 1)
        return
    message = _err(InvalidInput, body, ct, kind, **kw)
    assert needle in message


def test_unsupported_formats():
    assert "image/gif" in _err(UnsupportedFormat, b"x", "image/gif", "image")
    assert "image/png" in _err(UnsupportedFormat, b"x", "image/gif", "image")  # listed
    assert "text/plain" in _err(UnsupportedFormat, b"x", "text/plain", "image")


# --------------------------------------------------------------------------- fuzz

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30)

content_types = st.sampled_from([None, "application/json", "application/x-npy", "text/csv",
                                 "text/plain", "image/png", "image/jpeg",
                                 "TEXT/CSV; charset=utf-8"])
kinds = st.sampled_from(KINDS)
options = st.sampled_from([{}, {"shape": [2, 2, 1]}, {"columns": ["a", "b"]},
                           {"max_rows": 2, "max_text_chars": 3}])

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_invalid(body, ct, kind, kw):
    try:
        raw, n = decode(body, ct, kind, **kw)
    except InvalidInput:  # includes UnsupportedFormat
        return
    assert n == len(raw) >= 1
    if kind == "image":
        assert raw.dtype == np.float32 and np.isfinite(raw).all()


@FUZZ
@given(body=st.binary(max_size=200), ct=content_types, kind=kinds, kw=options)
def test_fuzz_arbitrary_bytes(body, ct, kind, kw):
    _decode_or_invalid(body, ct, kind, kw)


@FUZZ
@given(value=json_values, ct=st.sampled_from([None, "application/json", "text/csv"]),
       kind=kinds, kw=options)
def test_fuzz_arbitrary_json(value, ct, kind, kw):
    # stdlib json: also emits integers beyond 64 bits, which orjson refuses to parse
    _decode_or_invalid(json.dumps(value).encode(), ct, kind, kw)


@FUZZ
@given(body=st.text(alphabet='0123456789.,-+e \n\r"nafi', max_size=60), kind=kinds, kw=options)
def test_fuzz_csv_of_numbers(body, kind, kw):
    _decode_or_invalid(body.encode(), "text/csv", kind, kw)


@FUZZ
@given(value=json_values, kind=kinds)
def test_fuzz_npy_prefix_with_garbage(value, kind):
    body = npy(np.zeros((2, 2), dtype=np.float32))
    tail = json.dumps(value).encode()
    _decode_or_invalid(body[:10] + tail + body[10 + len(tail):], "application/x-npy", kind, {})


@FUZZ
@given(cut=st.integers(0, 400), junk=st.binary(max_size=40), ct=st.sampled_from(
    ["image/png", "image/jpeg"]), kw=options)
def test_fuzz_image_files_cut_and_garbled(cut, junk, ct, kw):
    body = image_file(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, ct.split("/")[1])
    _decode_or_invalid(body[:cut] + junk + body[cut + len(junk):], ct, "image", kw)


# --------------------------------------------------------------------------- image files


def image_file(pixels: np.ndarray, fmt: str = "png") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    image = Image.fromarray(pixels)
    image.save(buf, format=fmt.upper().replace("JPG", "JPEG"), **({"quality": 95} if fmt == "jpeg" else {}))
    return buf.getvalue()


def test_png_and_jpeg_bodies_fit_the_model_signature():
    from PIL import Image

    grey = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3)
    raw, n = decode(image_file(grey), "image/png", "image", shape=[8, 8, 1])
    assert n == 1 and raw.dtype == np.float32 and raw.shape == (1, 8, 8, 1)
    assert np.array_equal(raw[0, ..., 0], grey)  # 0–255 pixels, unchanged
    # the model's shape may leave out C=1 (as loopml.json's (H, W) signatures do)
    assert np.array_equal(decode(image_file(grey), "image/png", "image", shape=[8, 8])[0], raw)

    rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    raw, _ = decode(image_file(rgb), "IMAGE/PNG; foo=bar", "image", shape=[8, 8, 1])
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32)
    assert np.array_equal(raw[0, ..., 0], expected)  # greyscaled as the signature says

    raw, _ = decode(image_file(grey), "image/png", "image", shape=[8, 8, 3])
    assert raw.shape == (1, 8, 8, 3) and all(np.array_equal(raw[0, ..., k], grey) for k in range(3))

    big = np.kron(grey, np.ones((4, 4), dtype=np.uint8))  # 32×32, same picture
    raw, _ = decode(image_file(big), "image/png", "image", shape=[8, 8, 1])
    assert raw.shape == (1, 8, 8, 1) and np.abs(raw[0, ..., 0] - grey).max() <= 3  # resized

    raw, _ = decode(image_file(big, "jpeg"), "image/jpeg", "image", shape=[8, 8, 1])
    assert raw.shape == (1, 8, 8, 1) and np.abs(raw[0, ..., 0] - grey).mean() < 8  # lossy

    rgba = np.dstack([rgb, np.full((8, 8), 128, np.uint8)])
    palette = Image.fromarray(rgb).quantize(16)
    buf = io.BytesIO()
    palette.save(buf, format="PNG", transparency=0)
    for body in (image_file(rgba), buf.getvalue(), image_file(grey > 100)):  # RGBA, P, 1-bit
        raw, _ = decode(body, "image/png", "image", shape=[8, 8, 3])
        assert raw.shape == (1, 8, 8, 3) and np.isfinite(raw).all()


@pytest.mark.parametrize("body,ct,kind,shape,exc,needle", [
    (image_file(np.zeros((8, 16), np.uint8)), "image/png", "image", [8, 8, 1], InvalidInput,
     "image is 16×8; this model expects 8×8 greyscale images (input shape (8, 8, 1))"),
    (image_file(np.zeros((8, 8), np.uint8)), "image/png", "image", [8, 8, 4], InvalidInput,
     "8×8 4-channel images"),
    (image_file(np.zeros((8, 8), np.uint8)), "image/png", "image", None, InvalidInput,
     "names no input shape"),
    (image_file(np.zeros((8, 8), np.uint16)), "image/png", "image", [8, 8, 1],
     InvalidInput, "more than 8 bits"),
    (image_file(np.zeros((8, 8), np.uint8), "jpeg"), "image/png", "image", [8, 8, 1],
     InvalidInput, "not a readable PNG image"),
    (b"not an image", "image/jpeg", "image", [8, 8, 1], InvalidInput, "not a readable JPEG"),
    (image_file(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:2000],
     "image/png", "image", [8, 8, 1], InvalidInput, "PNG image cannot be decoded"),
    (image_file(np.zeros((8, 8), np.uint8)), "image/png", "text", None, UnsupportedFormat,
     "image/png bodies are for image models; this is a(n) text model"),
])
def test_bad_image_files_name_the_problem(body, ct, kind, shape, exc, needle):
    assert needle in _err(exc, body, ct, kind, shape=shape)


# --------------------------------------------------------------------------- encode


def test_encode_predictions_round_trip():
    proba = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)
    doc = orjson.loads(encode_predictions(proba, ["cat", "dog", "eel"]))
    first, second = doc["predictions"]
    assert first["label"] == "dog" and first["confidence"] == pytest.approx(0.7, abs=1e-6)
    assert list(first["probabilities"]) == ["cat", "dog", "eel"]
    assert first["probabilities"]["eel"] == pytest.approx(0.2, abs=1e-6)
    assert second["label"] == "cat"
    top = orjson.loads(encode_predictions(proba, ["cat", "dog", "eel"], top_k=2))["predictions"]
    assert list(top[0]["probabilities"]) == ["dog", "eel"]
    assert list(top[1]["probabilities"]) == ["cat", "dog"]  # tie: label order
    assert orjson.loads(encode_predictions(np.zeros((0, 3)), ["a", "b", "c"])) == \
        {"predictions": []}
    with pytest.raises(CorruptArtifact, match="expected"):
        encode_predictions(proba, ["cat", "dog"])


def test_error_body():
    assert orjson.loads(error_body('bad "x"')) == {"message": 'bad "x"'}


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 4), flat=st.booleans(), ints=st.booleans(), seed=st.integers(0, 2**16))
def test_fast_image_path_equals_the_strict_path(n, flat, ints, seed):
    from loopml.serving.codecs import _image_array

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 5, 4)) if ints else rng.normal(size=(n, 5, 4)) * 1e3
    rows = images.reshape(n, -1) if flat else images
    body = orjson.dumps({"instances": rows.tolist()})
    fast, _ = decode(body, "application/json", "image", shape=[5, 4, 1])
    strict = _image_array(orjson.loads(body)["instances"], "x", [5, 4, 1])
    assert fast.dtype == np.float32 and fast.shape == strict.shape
    np.testing.assert_array_equal(fast, strict)
