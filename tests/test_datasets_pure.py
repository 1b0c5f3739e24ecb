"""The pure-data part of loopml.datasets on real data: samples, readers, schema, hash, splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from loopml.core.errors import CorruptArtifact, InvalidInput, NotFound, UnsupportedFormat
from loopml.datasets.content import DatasetContent
from loopml.datasets.formats import FORMATS, read_source
from loopml.datasets.hashing import content_hash
from loopml.datasets.samples import SAMPLES, load_sample
from loopml.datasets.schema import infer_schema, sort_classes
from loopml.datasets.serialize import dump_content, load_content
from loopml.datasets.splits import stratified_split

DIGITS = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def mnist() -> DatasetContent:
    return load_sample("mnist")


@pytest.fixture(scope="module")
def penguins() -> DatasetContent:
    return load_sample("penguins")


@pytest.fixture(scope="module")
def bbc() -> DatasetContent:
    return load_sample("bbc-news")


# ---------------------------------------------------------------- samples


def test_mnist_sample(mnist: DatasetContent) -> None:
    assert mnist.kind == "image"
    assert mnist.images.shape == (5000, 28, 28, 1) and mnist.images.dtype == np.uint8
    assert mnist.labels.dtype == object and mnist.labels.ndim == 1
    schema = infer_schema(mnist)
    assert schema["classes"] == DIGITS
    assert set(schema["class_counts"].values()) == {500}
    assert schema["features"][0] == {"name": "image", "dtype": "uint8", "shape": [28, 28, 1],
                                     "min": 0, "max": 255}


def test_digits_sample() -> None:
    digits = load_sample("digits")
    assert digits.images.shape == (1797, 8, 8, 1)
    assert digits.images.max() == 16
    assert infer_schema(digits)["classes"] == DIGITS


def test_bbc_news_sample(bbc: DatasetContent) -> None:
    assert bbc.kind == "text" and len(bbc) == 2225
    assert list(bbc.frame.columns) == ["text"] and bbc.text_column == "text"
    schema = infer_schema(bbc)
    # the package's folder is "sports", not "sport"
    assert schema["classes"] == ["business", "entertainment", "politics", "sports", "tech"]
    assert sum(schema["class_counts"].values()) == 2225
    assert schema["text"] == "text" and schema["features"][0]["mean_length"] > 100
    # the one cp1252 article decodes its pound sign instead of failing or dropping it
    assert any("\u00a315.8m" in t for t in bbc.texts)
    assert not any("\ufffd" in t for t in bbc.texts)


def test_penguins_sample(penguins: DatasetContent) -> None:
    assert penguins.kind == "tabular" and penguins.label_column == "species"
    assert "species" not in penguins.frame.columns
    assert penguins.frame.isna().any().any()
    schema = infer_schema(penguins)
    assert schema["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    by_name = {f["name"]: f for f in schema["features"]}
    assert by_name["island"]["type"] == "categorical"
    assert by_name["island"]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert by_name["sex"]["missing"] > 0
    assert by_name["body_mass_g"]["type"] == "numeric" and by_name["body_mass_g"]["min"] > 0
    assert penguins.meta["dropped_rows_missing_label"] == 0
    json.dumps(schema, allow_nan=False)


def test_unknown_sample_lists_valid_names() -> None:
    with pytest.raises(NotFound) as err:
        load_sample("cifar")
    assert "'cifar'" in err.value.message
    for name in SAMPLES:
        assert name in err.value.message


# ---------------------------------------------------------------- readers


def test_npz_image_variants(tmp_path: Path, mnist: DatasetContent) -> None:
    sub = mnist.take(np.arange(0, 5000, 50))
    y = sub.labels.astype(np.int64)
    np.savez(tmp_path / "hw.npz", X=sub.images[..., 0], y=y)  # (N, H, W)
    np.savez(tmp_path / "flat.npz", images=sub.images.reshape(100, -1).astype(np.float64), LABELS=y)
    np.savez(tmp_path / "onehot.npz", x=sub.images, y=np.eye(10, dtype=np.float32)[y])
    np.savez(tmp_path / "chw.npz", x=np.transpose(sub.images, (0, 3, 1, 2)), y=y)
    hw = read_source(str(tmp_path / "hw.npz"))
    assert hw.kind == "image" and hw.images.shape == (100, 28, 28, 1) and hw.images.dtype == np.uint8
    assert (hw.labels == sub.labels).all()
    flat = read_source(str(tmp_path / "flat.npz"), fmt="npz")
    assert flat.images.shape == (100, 28, 28, 1) and flat.images.dtype == np.float32
    assert np.array_equal(flat.images, sub.images.astype(np.float32))
    assert (read_source(str(tmp_path / "onehot.npz")).labels == sub.labels).all()
    assert np.array_equal(read_source(str(tmp_path / "chw.npz")).images, sub.images)
    assert np.array_equal(hw.images, sub.images) and hw.label_column == "y"


def test_npz_small_table_stays_tabular(tmp_path: Path, penguins: DatasetContent) -> None:
    x = penguins.frame[["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]].dropna()
    np.savez(tmp_path / "p.npz", x=x.to_numpy(), y=penguins.labels[x.index].astype(str))
    content = read_source(str(tmp_path / "p.npz"))
    assert content.kind == "tabular" and list(content.frame.columns) == ["f0", "f1", "f2", "f3"]
    assert infer_schema(content)["classes"] == ["Adelie", "Chinstrap", "Gentoo"]


def test_csv_and_parquet_tabular(tmp_path: Path, penguins: DatasetContent) -> None:
    df = penguins.frame.assign(species=penguins.labels)
    df.to_csv(tmp_path / "p.csv", index=False)
    df.to_parquet(tmp_path / "p.parquet", index=False)
    df.rename(columns={"species": "kind"}).to_csv(tmp_path / "k.csv", index=False)
    for name in ("p.csv", "p.parquet"):
        content = read_source(str(tmp_path / name))
        assert content.kind == "tabular" and content.label_column == "species" and len(content) == 344
        assert list(content.frame.columns) == list(penguins.frame.columns)
        assert content.frame["sex"].isna().sum() == penguins.frame["sex"].isna().sum()
    assert read_source(str(tmp_path / "k.csv"), label="kind").label_column == "kind"
    with pytest.raises(InvalidInput, match=r"k\.csv has no label column .*columns: island, .*kind"):
        read_source(str(tmp_path / "k.csv"))
    with pytest.raises(InvalidInput, match=r"label column 'nope' not found in p\.csv; columns: island"):
        read_source(str(tmp_path / "p.csv"), label="nope")


def test_csv_drops_missing_labels(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1, 2, 3, 4], "target": [0, 1, None, 1]}).to_csv(tmp_path / "t.csv", index=False)
    content = read_source(str(tmp_path / "t.csv"))
    assert list(content.labels) == ["0", "1", "1"]  # 1.0 from the NaN-float column -> "1"
    assert content.meta["dropped_rows_missing_label"] == 1


def test_csv_text_inferred_and_explicit(tmp_path: Path, bbc: DatasetContent) -> None:
    sub = bbc.take(np.arange(0, 2225, 25))
    df = pd.DataFrame({"id": range(len(sub)), "topic": ["news"] * len(sub), "body": sub.texts,
                       "label": sub.labels})
    df.to_csv(tmp_path / "news.csv", index=False)
    df.to_parquet(tmp_path / "news.parquet", index=False)
    inferred = read_source(str(tmp_path / "news.csv"))
    assert inferred.kind == "text" and inferred.text_column == "body"
    assert inferred.texts == sub.texts and (inferred.labels == sub.labels).all()
    assert inferred.meta["dropped_columns"] == ["id", "topic"]
    explicit = read_source(str(tmp_path / "news.parquet"), fmt="text", text="body")
    assert content_hash(explicit) == content_hash(inferred)
    with pytest.raises(InvalidInput, match="text column 'nope' not found in news.csv"):
        read_source(str(tmp_path / "news.csv"), text="nope")


def test_image_folder(tmp_path: Path, mnist: DatasetContent) -> None:
    root = tmp_path / "imgs"
    idx = np.concatenate([np.flatnonzero(mnist.labels == c)[:4] for c in ("3", "7")])
    for i in idx:
        d = root / mnist.labels[i]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mnist.images[i, :, :, 0]).save(d / f"{i:05d}.png")
    Image.fromarray(mnist.images[idx[0], :, :, 0]).resize((56, 56)).save(root / "3" / "big.png")
    (root / "7" / ".DS_Store").write_bytes(b"junk")
    content = read_source(str(root))
    assert content.kind == "image" and content.images.shape == (9, 28, 28, 1)
    assert content.meta["resized"] == 1
    assert np.array_equal(content.images[:4], mnist.images[idx[:4]])  # lossless PNG, sorted order
    assert list(content.labels) == ["3"] * 5 + ["7"] * 4
    # one RGB image turns the whole folder RGB
    Image.fromarray(np.stack([mnist.images[idx[1], :, :, 0]] * 3, axis=-1)).save(root / "7" / "rgb.png")
    assert read_source(str(root), fmt="images").images.shape == (10, 28, 28, 3)
    (root / "7" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInput, match=r"image .*bad\.png cannot be read"):
        read_source(str(root))


def test_text_folder(tmp_path: Path) -> None:
    for topic, body in [("sport", "A late goal won the cup final."), ("tech", "Chips got faster again.")]:
        (tmp_path / "t" / topic).mkdir(parents=True)
        (tmp_path / "t" / topic / "a.txt").write_text(body, encoding="utf-8")
    (tmp_path / "t" / "tech" / "b.txt").write_bytes("Price: \u00a315.8m, caf\u00e9".encode("latin-1"))
    content = read_source(str(tmp_path / "t"))
    assert content.kind == "text" and list(content.labels) == ["sport", "tech", "tech"]
    assert content.texts[2] == "Price: \u00a315.8m, caf\u00e9"
    assert infer_schema(content)["features"][0] == {"name": "text", "dtype": "string",
                                                    "mean_length": 4.67, "max_length": 7}


def test_bad_inputs(tmp_path: Path) -> None:
    assert FORMATS == ("npz", "csv", "parquet", "images", "text")
    with pytest.raises(InvalidInput, match="does not exist"):
        read_source(str(tmp_path / "missing.csv"))
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(UnsupportedFormat, match=r"d\.json.*'\.json'"):
        read_source(str(tmp_path / "d.json"))
    with pytest.raises(UnsupportedFormat, match="unknown format 'xlsx'"):
        read_source(str(tmp_path / "d.json"), fmt="xlsx")
    with pytest.raises(UnsupportedFormat, match="format images expects a folder"):
        read_source(str(tmp_path / "d.json"), fmt="images")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InvalidInput, match=r"empty\.csv is empty"):
        read_source(str(tmp_path / "empty.csv"))
    (tmp_path / "header.csv").write_text("a,label\n")
    with pytest.raises(InvalidInput, match=r"header\.csv has no rows"):
        read_source(str(tmp_path / "header.csv"))
    (tmp_path / "one.csv").write_text("a,label\n1,cat\n2,cat\n")
    with pytest.raises(InvalidInput, match=r"only 1 class \('cat'\)"):
        read_source(str(tmp_path / "one.csv"))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InvalidInput, match=r"bad\.npz cannot be read as npz"):
        read_source(str(tmp_path / "bad.npz"))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(InvalidInput, match=r"bad\.parquet cannot be read as parquet"):
        read_source(str(tmp_path / "bad.parquet"))
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((3, 4)))
    with pytest.raises(InvalidInput, match=r"nolabels\.npz has no label array .*arrays: x"):
        read_source(str(tmp_path / "nolabels.npz"))
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((3, 4)), y=np.array([0, 1]))
    with pytest.raises(InvalidInput, match="3 samples but 2 labels"):
        read_source(str(tmp_path / "mismatch.npz"))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(InvalidInput, match="has no class subfolders"):
        read_source(str(tmp_path / "flat"))
    (tmp_path / "nothing" / "cls").mkdir(parents=True)
    (tmp_path / "nothing" / "cls" / "x.dat").write_text("?")
    with pytest.raises(UnsupportedFormat, match=r"holds no image or \.txt files \(found: \.dat\)"):
        read_source(str(tmp_path / "nothing"))


# ---------------------------------------------------------------- schema / hash / serialize


def test_natural_class_order() -> None:
    assert sort_classes(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sort_classes(["b", "10", "a"]) == ["10", "a", "b"]
    content = DatasetContent(kind="tabular", labels=np.array(["10", "2", "2"], dtype=object),
                             frame=pd.DataFrame({"v": [1.0, np.nan, 3.0]}))
    schema = infer_schema(content)
    assert schema["classes"] == ["2", "10"] and list(schema["class_counts"]) == ["2", "10"]
    assert schema["features"][0]["missing"] == 1 and schema["features"][0]["mean"] == 2.0


def test_hash_is_logical(tmp_path: Path, penguins: DatasetContent) -> None:
    h = content_hash(penguins)
    assert h == content_hash(load_sample("penguins")) and len(h) == 64
    changed = penguins.take(np.arange(len(penguins)))
    changed.frame.loc[5, "body_mass_g"] += 1
    assert content_hash(changed) != h
    relabeled = penguins.take(np.arange(len(penguins)))
    relabeled.labels[0] = "Gentoo"
    assert content_hash(relabeled) != h
    assert content_hash(penguins.take(np.arange(len(penguins))[::-1])) != h  # row order counts
    df = penguins.frame.assign(species=penguins.labels)
    df.to_csv(tmp_path / "a.csv", index=False)
    first = read_source(str(tmp_path / "a.csv"))
    first.frame.assign(species=first.labels).to_csv(tmp_path / "b.csv", index=False)
    assert content_hash(read_source(str(tmp_path / "b.csv"))) == content_hash(first)


@pytest.mark.parametrize("name", ["mnist", "bbc-news", "penguins"])
def test_dump_load_round_trip(name: str, request: pytest.FixtureRequest) -> None:
    content = request.getfixturevalue(name.replace("bbc-news", "bbc"))
    files = dump_content(content)
    assert list(files) == (["data.npz"] if content.kind == "image" else ["data.parquet"])
    assert dump_content(content) == files  # byte-identical: no timestamps in the files
    back = load_content(files, infer_schema(content), what=f"{name}:1")
    assert content_hash(back) == content_hash(content)
    assert back.kind == content.kind and back.label_column == content.label_column
    assert back.labels.dtype == object and isinstance(back.labels[0], str)


def test_load_damaged_version(mnist: DatasetContent, penguins: DatasetContent) -> None:
    schema = infer_schema(mnist)
    data = dump_content(mnist)["data.npz"]
    with pytest.raises(CorruptArtifact, match=r"dataset mnist:2 is damaged: data\.npz cannot be read \("):
        load_content({"data.npz": data[: len(data) // 2]}, schema, what="mnist:2")
    with pytest.raises(CorruptArtifact, match=r"dataset mnist:2 is damaged: data\.npz is missing"):
        load_content({}, schema, what="mnist:2")
    data = dump_content(penguins)["data.parquet"]
    with pytest.raises(CorruptArtifact, match=r"penguins:1 is damaged: data\.parquet cannot be read"):
        load_content({"data.parquet": data[:100] + data[200:]}, infer_schema(penguins), what="penguins:1")


def test_mixed_object_column_round_trips() -> None:
    frame = pd.DataFrame({"code": pd.Series([1, "b", None, 2.5], dtype=object), "v": [1, 2, 3, 4]})
    content = DatasetContent(kind="tabular", labels=np.array(["x", "y", "x", "y"], dtype=object), frame=frame)
    back = load_content(dump_content(content), infer_schema(content))
    assert content_hash(back) == content_hash(content)


# ---------------------------------------------------------------- splits


def _check_split(labels: np.ndarray, split: dict[str, np.ndarray]) -> None:
    assert list(split) == ["train", "validation", "test"]
    joined = np.concatenate(list(split.values()))
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))  # disjoint and complete
    for idx in split.values():
        assert idx.dtype == np.int64 and len(np.unique(idx)) == len(idx)
    for cls, n in zip(*np.unique(labels, return_counts=True)):
        if n >= 3:
            assert all((labels[idx] == cls).any() for idx in split.values()), cls


def test_split_is_stratified_and_deterministic(mnist: DatasetContent) -> None:
    split = stratified_split(mnist.labels, seed=7)
    _check_split(mnist.labels, split)
    assert [len(v) for v in split.values()] == [4000, 500, 500]
    assert all((mnist.labels[split["test"]] == c).sum() == 50 for c in DIGITS)
    again = stratified_split(mnist.labels, seed=7)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    other = stratified_split(mnist.labels, seed=8)
    assert not np.array_equal(split["test"], other["test"])
    # mnist is sorted by label; the first rows of a split must still be a mix of classes
    assert len(set(mnist.labels[split["test"][:10]])) > 3


def test_split_rejects_bad_fractions() -> None:
    labels = np.array(["a", "b"] * 10, dtype=object)
    for bad in [(0.8, 0.2), (0.8, 0.2, 0.0), (0.5, 0.5, 0.5), (1.2, -0.1, -0.1), ("a", 1, 1)]:
        with pytest.raises(InvalidInput, match="split fractions"):
            stratified_split(labels, fractions=bad)


@settings(max_examples=60, deadline=None)
@given(
    codes=st.lists(st.integers(0, 6), min_size=1, max_size=300),
    seed=st.integers(0, 2**32 - 1),
    weights=st.tuples(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20)),
)
def test_split_property(codes: list[int], seed: int, weights: tuple[int, int, int]) -> None:
    fractions = tuple(w / sum(weights) for w in weights)
    labels = np.array([f"c{c}" for c in codes], dtype=object)
    split = stratified_split(labels, seed=seed, fractions=fractions)
    _check_split(labels, split)
    again = stratified_split(labels, seed=seed, fractions=fractions)
    assert all(np.array_equal(split[k], again[k]) for k in split)
