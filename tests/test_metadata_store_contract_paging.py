"""Server-side paging and filtering of the dataset and model lists (what the dashboard's list
pages ask for), run unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

from loopml.store.datasets_repo import DatasetRepo
from loopml.store.db import MetadataStore
from loopml.store.models_repo import ModelRepo
from tests.test_metadata_store_contract import _ds_fields, _mv_fields

pytest_plugins = ("tests.backends",)


def test_dataset_list_filters_and_pages_in_sql(metadata_store: MetadataStore) -> None:
    repo = DatasetRepo(metadata_store)
    for i in range(7):
        repo.add_version(f"set_{i}", 1, **_ds_fields(f"h{i}"))
    repo.add_version("Digits%", 1, **_ds_fields("img1", kind="image"))
    repo.add_version("set_3", 2, **_ds_fields("h3b", kind="text"))  # newest version decides the kind

    names = [d["name"] for d in repo.list()]
    assert names == sorted(names) and len(names) == 8
    assert [d["name"] for d in repo.list(limit=3)] == names[:3]
    assert [d["name"] for d in repo.list(limit=3, offset=6)] == names[6:]
    assert repo.list(offset=20) == []
    # substring, any case; % and _ are literal
    assert [d["name"] for d in repo.list(name_contains="digits%")] == ["Digits%"]
    assert [d["name"] for d in repo.list(name_contains="T_1")] == ["set_1"]
    assert repo.list(name_contains="t%") == []
    assert [d["name"] for d in repo.list(kind="image")] == ["Digits%"]
    text = repo.list(kind="text")
    assert [(d["name"], d["latest_version"], d["versions"]) for d in text] == [("set_3", 2, 2)]
    assert "set_3" not in [d["name"] for d in repo.list(kind="tabular")]
    assert [d["name"] for d in repo.list(kind="tabular", name_contains="SET", limit=2, offset=1)] == ["set_1", "set_2"]


def test_model_list_and_versions_page_in_sql(metadata_store: MetadataStore) -> None:
    repo = ModelRepo(metadata_store)
    for i in range(5):
        repo.add_version(f"m{i}", 1, **_mv_fields())
    for v in range(2, 26):
        repo.add_version("m2", v, **_mv_fields(metrics={"accuracy": v / 100}))
    repo.set_alias("m2", "prod", 7)

    assert [m["name"] for m in repo.list()] == ["m0", "m1", "m2", "m3", "m4"]
    page = repo.list(limit=2, offset=2)
    assert [m["name"] for m in page] == ["m2", "m3"]
    assert page[0]["versions"] == 25 and page[0]["latest_version"] == 25
    assert page[0]["latest_metrics"] == {"accuracy": 0.25} and page[0]["aliases"] == {"prod": 7}
    assert [m["name"] for m in repo.list(name_contains="M3")] == ["m3"]

    assert [v["version"] for v in repo.versions("m2")] == list(range(1, 26))
    newest = repo.versions("m2", limit=10, offset=15, newest_first=True)
    assert [v["version"] for v in newest] == list(range(10, 0, -1))
    assert [v["version"] for v in repo.versions("m2", limit=3, offset=5)] == [6, 7, 8]
    assert repo.versions("m2", limit=3, offset=5)[1]["aliases"] == ["prod"]
    assert repo.version_count("m2") == (25, {"prod": 7})


def test_versions_trained_on_a_dataset_version(metadata_store: MetadataStore) -> None:
    repo = ModelRepo(metadata_store)
    repo.add_version("a", 1, **_mv_fields(dataset="iris:1"))
    repo.add_version("a", 2, **_mv_fields(dataset="iris:2"))
    repo.add_version("b", 1, **_mv_fields(dataset="iris:1"))
    repo.set_alias("b", "prod", 1)
    found = repo.trained_on("iris:1")
    assert [v["ref"] for v in found] == ["b:1", "a:1"] and found[0]["aliases"] == ["prod"]
    assert repo.trained_on("iris:9") == []
