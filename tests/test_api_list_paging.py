"""GET /datasets and GET /models filter and page on the server when asked (the dashboard's list
pages), and answer everything, as before, when not."""

from __future__ import annotations

import httpx

from tests.test_metadata_store_contract import _ds_fields, _mv_fields


def test_dataset_and_model_lists_page_on_the_server(live_server, platform) -> None:
    for i in range(6):
        platform.datasets.add_version(f"set-{i}", 1, **_ds_fields(f"h{i}"))
        platform.models.add_version(f"model-{i}", 1, **_mv_fields())
    platform.datasets.add_version("pics", 1, **_ds_fields("img", kind="image"))
    for v in range(2, 5):
        platform.models.add_version("model-3", v, **_mv_fields())

    with httpx.Client(base_url=live_server) as api:
        everything = api.get("/datasets").json()
        assert len(everything) == 7
        assert api.get("/datasets", params={"limit": 2, "offset": 1}).json() == everything[1:3]
        assert [d["name"] for d in api.get("/datasets", params={"name": "SET-4"}).json()] == ["set-4"]
        assert [d["name"] for d in api.get("/datasets", params={"kind": "image"}).json()] == ["pics"]
        bad = api.get("/datasets", params={"kind": "audio"})
        assert bad.status_code == 400 and "kind" in bad.text
        assert api.get("/datasets", params={"limit": 0}).status_code == 400

        models = api.get("/models").json()
        assert [m["name"] for m in models] == [f"model-{i}" for i in range(6)]
        page = api.get("/models", params={"limit": 2, "offset": 3}).json()
        assert page == models[3:5] and page[0]["versions"] == 4 and page[0]["latest_version"] == 4
        assert api.get("/models", params={"name": "l-5"}).json() == models[5:]
        assert api.get("/models", params={"offset": 6}).json() == []
        newest = api.get("/models/model-3", params={"limit": 2, "offset": 1, "newest_first": True}).json()
        assert [v["version"] for v in newest["versions"]] == [3, 2] and newest["total"] == 4

    from loopml.sdk.client import Client

    c = Client(live_server)
    assert [d["name"] for d in c.list_datasets(kind="tabular", limit=2, offset=4)] == ["set-4", "set-5"]
    assert [m["name"] for m in c.models(name="model-1")] == ["model-1"]
    assert len(c.models()) == 6 and len(c.list_datasets()) == 7
