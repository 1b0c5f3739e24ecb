"""ArtifactStore contract, run unchanged on a local folder and on a real S3 API (moto server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopml.artifacts.keys import join, validate_key
from loopml.artifacts.store import ArtifactStore
from loopml.core.errors import CorruptArtifact, InvalidInput, NotFound

pytest_plugins = ("tests.backends",)


def _raw_entries(store: ArtifactStore) -> list[str]:
    """Everything physically under the store root (files / objects), bypassing list()'s filter."""
    if store.is_local:
        root = Path(store._root)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    from tests.backends import s3_client

    bucket, prefix = store._root.split("/", 1)
    client = s3_client(store.fs.client_kwargs["endpoint_url"])
    objs = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted([o["Key"][len(prefix) + 1:] for o in objs] + [f"<upload {u['Key']}>" for u in uploads])


def _make_tree(base: Path) -> dict[str, bytes]:
    files = {"model.keras": b"weights" * 100, "meta.json": b'{"a": 1}',
             "assets/vocab.txt": b"a\nb\n", "assets/deep/nested/x.bin": bytes(range(256))}
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return files


# -- bytes and files -------------------------------------------------------------------------

def test_put_get_bytes_round_trip(artifact_store: ArtifactStore) -> None:
    data = bytes(range(256)) * 10 + b"\x00end"
    artifact_store.put_bytes("datasets/iris/1/data.parquet", data)
    assert artifact_store.get_bytes("datasets/iris/1/data.parquet") == data
    assert artifact_store.exists("datasets/iris/1/data.parquet")
    assert artifact_store.size("datasets/iris/1/data.parquet") == len(data)
    artifact_store.put_bytes("empty", b"")
    assert artifact_store.get_bytes("empty") == b""
    with artifact_store.open_read("datasets/iris/1/data.parquet") as f:
        assert f.read() == data


def test_put_file_get_file(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(10_000))
    artifact_store.put_file(src, "a/b/file.bin")
    dst = tmp_path / "out" / "deeper" / "copy.bin"
    artifact_store.get_file("a/b/file.bin", dst)
    assert dst.read_bytes() == src.read_bytes()


def test_missing_key_is_not_found_naming_the_key(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    for call in (lambda: artifact_store.get_bytes("no/such/key.bin"),
                 lambda: artifact_store.size("no/such/key.bin"),
                 lambda: artifact_store.get_file("no/such/key.bin", tmp_path / "x")):
        with pytest.raises(NotFound, match="no/such/key.bin"):
            call()
    with pytest.raises(NotFound, match="no/such/key.bin"):
        with artifact_store.open_read("no/such/key.bin"):
            pass
    assert not artifact_store.exists("no/such/key.bin")


# -- directories -----------------------------------------------------------------------------

def test_upload_and_download_dir_with_nested_folders(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    files = _make_tree(tmp_path / "src")
    keys = artifact_store.upload_dir(tmp_path / "src", "models/m/1")
    assert keys == sorted(f"models/m/1/{rel}" for rel in files)
    out = artifact_store.download_dir("models/m/1", tmp_path / "dst", required=("model.keras", "meta.json"))
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == files


def test_download_dir_required_missing_is_corrupt(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    _make_tree(tmp_path / "src")
    artifact_store.upload_dir(tmp_path / "src", "models/m/1")
    with pytest.raises(CorruptArtifact, match="signature.json"):
        artifact_store.download_dir("models/m/1", tmp_path / "dst", required=("model.keras", "signature.json"))
    with pytest.raises(CorruptArtifact, match="model.keras"):
        artifact_store.download_dir("models/none", tmp_path / "dst2", required=("model.keras",))


def test_list_is_recursive_sorted_and_relative(artifact_store: ArtifactStore) -> None:
    for key in ("b/z.txt", "a/y/deep.txt", "a/x.txt", "ab/sibling.txt", "top.txt"):
        artifact_store.put_bytes(key, key.encode())
    assert artifact_store.list() == ["a/x.txt", "a/y/deep.txt", "ab/sibling.txt", "b/z.txt", "top.txt"]
    assert artifact_store.list("a") == ["a/x.txt", "a/y/deep.txt"]  # not "ab/..."
    assert artifact_store.list("a/y") == ["a/y/deep.txt"]
    assert artifact_store.list("missing") == []
    assert artifact_store.list("a/missing/deeper") == []


def test_list_of_empty_store_is_empty(artifact_store: ArtifactStore) -> None:
    assert artifact_store.list() == []


def test_delete_key_and_recursive_prefix(artifact_store: ArtifactStore) -> None:
    for key in ("run/1/a.txt", "run/1/sub/b.txt", "run/10/c.txt", "run/2/d.txt"):
        artifact_store.put_bytes(key, b"x")
    artifact_store.delete("run/2/d.txt")
    assert not artifact_store.exists("run/2/d.txt")
    artifact_store.delete("run/1")
    assert not artifact_store.exists("run/1/a.txt")
    assert not artifact_store.exists("run/1/sub/b.txt")
    assert artifact_store.list("run") == ["run/10/c.txt"]
    artifact_store.delete("run/never-existed")  # deleting nothing is fine


# -- streaming and atomicity -----------------------------------------------------------------

def test_open_write_streams_a_large_object(artifact_store: ArtifactStore) -> None:
    chunk = os.urandom(1024 * 1024)
    with artifact_store.open_write("ckpt/big.bin") as f:
        for i in range(7):  # 7 MiB: past S3's 5 MiB minimum multipart part size
            f.write(bytes([i]) + chunk[1:])
    expected = b"".join(bytes([i]) + chunk[1:] for i in range(7))
    assert artifact_store.size("ckpt/big.bin") == len(expected)
    assert artifact_store.get_bytes("ckpt/big.bin") == expected
    assert artifact_store.list() == ["ckpt/big.bin"]
    assert _raw_entries(artifact_store) == ["ckpt/big.bin"]


def test_open_write_failure_leaves_nothing(artifact_store: ArtifactStore) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with artifact_store.open_write("ckpt/partial.bin") as f:
            f.write(os.urandom(256 * 1024))
            raise RuntimeError("boom")
    assert not artifact_store.exists("ckpt/partial.bin")
    assert artifact_store.list() == []
    assert _raw_entries(artifact_store) == []  # no temp file, no dangling multipart upload


def test_open_write_failure_keeps_the_previous_object(artifact_store: ArtifactStore) -> None:
    artifact_store.put_bytes("ckpt/last.bin", b"old")
    with pytest.raises(RuntimeError):
        with artifact_store.open_write("ckpt/last.bin") as f:
            f.write(b"new-but-incomplete")
            raise RuntimeError("crash mid-write")
    assert artifact_store.get_bytes("ckpt/last.bin") == b"old"
    assert _raw_entries(artifact_store) == ["ckpt/last.bin"]


def test_overwrite_replaces_the_object(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    artifact_store.put_bytes("k/v.bin", b"first version, longer")
    artifact_store.put_bytes("k/v.bin", b"second")
    assert artifact_store.get_bytes("k/v.bin") == b"second"
    src = tmp_path / "third"
    src.write_bytes(b"third")
    artifact_store.put_file(src, "k/v.bin")
    assert artifact_store.get_bytes("k/v.bin") == b"third"
    with artifact_store.open_write("k/v.bin") as f:
        f.write(b"fourth")
    assert artifact_store.get_bytes("k/v.bin") == b"fourth"
    assert artifact_store.size("k/v.bin") == len(b"fourth")
    assert artifact_store.list() == ["k/v.bin"]
    assert _raw_entries(artifact_store) == ["k/v.bin"]


# -- key validation --------------------------------------------------------------------------

BAD_KEYS = ["../x", "a/../b", "..", ".", "./a", "a/./b", "/abs", "a//b", "a/", "", "a\\b", "..\\x",
            "a\x00b", "a\nb", "a\tb", "a\x7fb", "a/\x1b/b"]


def test_bad_keys_are_refused_and_nothing_is_written(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"payload")
    for key in BAD_KEYS:  # one test per backend: an S3 store costs ~0.4 s to set up
        calls = {
            "put_bytes": lambda: artifact_store.put_bytes(key, b"payload"),
            "put_file": lambda: artifact_store.put_file(src, key),
            "get_bytes": lambda: artifact_store.get_bytes(key),
            "get_file": lambda: artifact_store.get_file(key, tmp_path / "out"),
            "exists": lambda: artifact_store.exists(key),
            "size": lambda: artifact_store.size(key),
            "delete": lambda: artifact_store.delete(key),
            "url": lambda: artifact_store.url(key),
        }
        for name, call in calls.items():
            with pytest.raises(InvalidInput):
                call()
                pytest.fail(f"{name}({key!r}) was accepted")
        for name, cm in (("open_write", artifact_store.open_write), ("open_read", artifact_store.open_read)):
            with pytest.raises(InvalidInput):
                with cm(key) as f:
                    pytest.fail(f"{name}({key!r}) was accepted: {f}")
    assert artifact_store.list() == []
    assert _raw_entries(artifact_store) == []
    if artifact_store.is_local:  # nothing escaped the root either
        assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "f"]


def test_upload_dir_refuses_a_bad_prefix(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    _make_tree(tmp_path / "src")
    for prefix in ("../escape", "a/../../b"):
        with pytest.raises(InvalidInput):
            artifact_store.upload_dir(tmp_path / "src", prefix)
    assert artifact_store.list() == []


def test_bad_key_message_names_the_key() -> None:
    with pytest.raises(InvalidInput, match=r"a/\.\./b"):
        validate_key("a/../b")
    assert validate_key("", allow_empty=True) == ""
    assert validate_key("datasets/iris/1/data.parquet") == "datasets/iris/1/data.parquet"
    assert join("a/", "/b/", "", "c") == "a/b/c"


_KEY_ALPHABET = st.sampled_from(list("ab./\\ -_") + ["\x00", "\n", "\x7f", "é", ".."])


@settings(max_examples=400, deadline=None)
@given(key=st.one_of(st.text(max_size=30), st.lists(_KEY_ALPHABET, max_size=12).map("".join)))
def test_validate_key_property(key: str) -> None:
    try:
        out = validate_key(key)
    except InvalidInput as exc:
        assert exc.code == "invalid_input"
        return
    assert out == key
    assert not key.startswith("/")
    assert "\\" not in key and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in key)
    for segment in key.split("/"):
        assert segment not in ("", ".", "..")
