"""Request/response codecs for real-time endpoints (loopml.serving.codecs): pure, fast."""

from __future__ import annotations

import io
import json
import re

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


# --------------------------------------------------------------------------- every layout (issue 11)

def _layouts(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The accepted layouts of (N, H, W, C) pixels: as they are, (N, H, W) when C is 1, flat."""
    n, h, w, c = pixels.shape
    found = {"hwc": pixels, "flat": pixels.reshape(n, h * w * c)}
    if c == 1:
        found["hw"] = pixels.reshape(n, h, w)
    return found


WRAPS = {"instances": lambda x: {"instances": x}, "inputs": lambda x: {"inputs": x},
         "bare": lambda x: x}
DUMPS = {"orjson": orjson.dumps, "spaced": lambda v: json.dumps(v).encode(),
         "indented": lambda v: json.dumps(v, indent=1).encode()}


@pytest.mark.parametrize("wrap", sorted(WRAPS))
@pytest.mark.parametrize("dumps", sorted(DUMPS))
@pytest.mark.parametrize("layout", ["hwc", "hw", "flat"])
@pytest.mark.parametrize("values", ["ints", "floats"])
@pytest.mark.parametrize("n", [1, 3])
def test_every_layout_decodes_to_the_same_pixels(wrap, dumps, layout, values, n):
    rng = np.random.default_rng(n)
    pixels = rng.integers(0, 256, (n, 28, 28, 1))
    if values == "floats":
        pixels = pixels / 255
    body = DUMPS[dumps](WRAPS[wrap](_layouts(pixels)[layout].tolist()))
    raw, rows = decode(body, "application/json", "image", shape=[28, 28, 1])
    assert rows == n and raw.dtype == np.float32
    assert raw.shape == _layouts(pixels)[layout].shape  # the features reshape it
    np.testing.assert_array_equal(raw.reshape(pixels.shape), pixels.astype(np.float32))


@st.composite
def image_bodies(draw):
    """(body, shape, pixels): a regular JSON body of N images in one accepted layout."""
    h, w, c = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.sampled_from([1, 1, 3]))
    n = draw(st.integers(1, 4))
    if draw(st.booleans()):
        values = draw(st.lists(st.integers(-2**40, 2**40), min_size=n * h * w * c,
                               max_size=n * h * w * c))
    else:
        values = draw(st.lists(st.integers(-300, 300) | st.floats(-1e30, 1e30),
                               min_size=n * h * w * c, max_size=n * h * w * c))
    pixels = np.array(values, dtype=object).reshape(n, h, w, c)
    layout = draw(st.sampled_from(sorted(_layouts(pixels))))
    rows = _layouts(pixels)[layout].tolist()
    body = draw(st.sampled_from(sorted(DUMPS)).map(DUMPS.get))(
        draw(st.sampled_from(sorted(WRAPS)).map(WRAPS.get))(rows))
    return body, [h, w, c], np.asarray(values, dtype=np.float64).reshape(n, h, w, c)


def _strict(body: bytes, shape):
    from loopml.serving.codecs import _image_array, _json_instances

    return _image_array(_json_instances(body), "JSON instances", shape)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=image_bodies(), chunk=st.sampled_from([4, 16, 1 << 20]))
def test_fast_layouts_equal_the_strict_path(case, chunk):
    from loopml.serving.json_pixels import decode_pixels

    body, shape, pixels = case
    # small chunks: the numbers cut at commas; lists_bytes=chunk: (N, H, W) and flat bodies
    # go by the skeleton too when chunk is small
    fast = decode_pixels(body, shape, 10_000, chunk_bytes=chunk, lists_bytes=chunk)
    assert fast is not None, body
    strict = _strict(body, shape)
    assert fast.dtype == strict.dtype == np.float32 and fast.shape == strict.shape
    np.testing.assert_array_equal(fast, strict)
    np.testing.assert_array_equal(fast.reshape(pixels.shape), pixels.astype(np.float32))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=image_bodies(), edits=st.lists(st.tuples(
    st.integers(0, 10_000), st.sampled_from([b"", b"[", b"]", b",", b"0", b"5", b"-", b".",
                                             b"e", b" ", b"[]", b"[5]", b"5,", b",5", b"}",
                                             "swap", "out]", "[out"])),
    min_size=1, max_size=2), chunk=st.sampled_from([4, 1 << 20]))
def test_mutated_bodies_fast_path_never_accepts_what_json_refuses(case, edits, chunk):
    """A body with characters inserted, deleted or swapped anywhere (``[5]`` → ``[]5``): the
    fast path either declines or decodes exactly what the strict path (a real JSON parser)
    decodes."""
    from loopml.serving.json_pixels import decode_pixels

    body, shape, _ = case
    for pos, edit in edits:
        pos %= len(body) + 1
        if edit == "swap":
            body = body[:pos] + body[pos + 1:pos + 2] + body[pos:pos + 1] + body[pos + 2:]
        elif edit in ("out]", "[out"):  # a number moved out of its list: "5]" → "]5"
            pattern = rb"([0-9.eE+-]+)(\])" if edit == "out]" else rb"(\[)([0-9.eE+-]+)"
            found = list(re.finditer(pattern, body))
            if found:
                m = found[pos % len(found)]
                body = body[:m.start()] + m.group(2) + m.group(1) + body[m.end():]
        else:  # insert, or delete one byte
            body = body[:pos] + edit + body[pos + (not edit):]
    fast = decode_pixels(body, shape, 10_000, chunk_bytes=chunk, lists_bytes=chunk)
    if fast is None:
        _decode_or_invalid(body, None, "image", {"shape": shape})
        return
    strict = _strict(body, shape)  # raises if the fast path accepted a bad body
    np.testing.assert_array_equal(fast, strict)


@pytest.mark.parametrize("rows,needle", [
    ([[[[1]] * 4] * 4, [[[1]] * 4] * 3], "ragged"),                       # an image short a row
    ([[[[1]] * 4] * 3 + [[[1]] * 3]], "ragged"),                           # a row short a pixel
    ([[[[1, 2]] * 4] * 4], "expects (N, 4, 4, 1)"),                        # two channels
    ([[[[1]] * 4] * 4 + [[[1]] * 4]], "expects (N, 4, 4, 1)"),             # five rows
    ([[[1]] * 4] * 4, "looks like ONE image"),                             # not wrapped
    ([[[[1]] * 4] * 3 + [[[1]] * 3 + [1]]], "ragged"),                     # a bare pixel
    ([[[[1]] * 4] * 3 + [[[1]] * 3 + [[]]]], "ragged"),                    # an empty pixel
    ([[[[1]] * 4] * 3 + [[[1]] * 3 + [[1, 2]]]], "ragged"),                # a 2-value pixel
    ([[[[1]] * 4] * 3 + [[[1]] * 3 + [["1"]]]], "strings"),
    ([[[[1]] * 4] * 3 + [[[1]] * 3 + [[None]]]], "null"),
    ([[[[1]] * 4] * 3 + [[[1]] * 3 + [[1e300]]]], "infinite"),
    ([[1] * 15], "expects (N, 4, 4, 1)"),                                  # flat, one short
])
def test_misshaped_layouts_name_the_expected_shape(rows, needle):
    for body in (j({"instances": rows}), json.dumps(rows).encode()):
        assert needle in _err(InvalidInput, body, None, "image", shape=[4, 4, 1])


def test_big_bodies_decode_off_the_event_loop():
    """A body past OFF_LOOP_BYTES is decoded on a worker thread: the loop runs other tasks
    meanwhile; a small one is decoded inline (no thread hop)."""
    import asyncio

    from loopml.serving.codecs import OFF_LOOP_BYTES, decode_async

    pixels = np.random.default_rng(0).integers(0, 256, (300, 28, 28, 1))
    big = orjson.dumps({"instances": pixels.tolist()})
    small = orjson.dumps({"instances": pixels[:1].tolist()})
    assert len(small) <= OFF_LOOP_BYTES < len(big)

    async def ticks_during(body: bytes) -> tuple[int, np.ndarray]:
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        raw, _ = await decode_async(body, "application/json", "image", shape=[28, 28, 1])
        seen = ticks
        task.cancel()
        return seen, raw

    seen, raw = asyncio.run(ticks_during(big))
    assert seen > 0
    np.testing.assert_array_equal(raw.reshape(pixels.shape), pixels)
    seen, raw = asyncio.run(ticks_during(small))
    assert seen == 0
    np.testing.assert_array_equal(raw.reshape(1, 28, 28, 1), pixels[:1])
    # the thread gets every option: a big tabular body of lists needs its columns
    rows = [[i, f"city {i}"] for i in range(8_000)]
    body = orjson.dumps({"instances": rows})
    assert len(body) > OFF_LOOP_BYTES
    got = asyncio.run(decode_async(body, None, "tabular", columns=COLUMNS))
    assert got == decode(body, None, "tabular", columns=COLUMNS)
    assert got[0][7_999] == {"age": 7_999, "city": "city 7999"}
