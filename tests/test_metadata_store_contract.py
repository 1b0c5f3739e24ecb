"""MetadataStore + repositories contract, run unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, InvalidInput, NotFound, SchemaOutOfDate
from loopml.store import tables as t
from loopml.store.datasets_repo import DatasetRepo
from loopml.store.db import MetadataStore, current_revision, head_revision, make_engine
from loopml.core.jobstatus import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED
from loopml.store.jobs_repo import JobRepo
from loopml.store.models_repo import ModelRepo
from tests.store_support import assert_utc_iso, count

pytest_plugins = ("tests.backends",)


# -- schema ----------------------------------------------------------------------------------

def test_new_database_is_created_at_head(metadata_store: MetadataStore) -> None:
    with metadata_store.engine.connect() as conn:
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert rows == [head_revision()]
    assert current_revision(metadata_store.engine) == head_revision()
    # opening it again is a no-op
    again = MetadataStore(metadata_store.url)
    try:
        assert current_revision(again.engine) == head_revision()
    finally:
        again.dispose()


def test_older_or_unknown_revision_is_refused(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    store.dispose()
    with pytest.raises(SchemaOutOfDate, match="loopml db upgrade") as info:
        MetadataStore(metadata_url)
    assert "0000_older" in info.value.message and head_revision() in info.value.message

    # tables but no revision at all (e.g. created by hand / by a pre-Alembic LoopML)
    engine = make_engine(metadata_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="loopml db upgrade") as info:
        MetadataStore(metadata_url)
    assert "unknown" in info.value.message


def test_empty_database_is_not_created_when_create_is_false(metadata_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="loopml db upgrade"):
        MetadataStore(metadata_url, create=False)


def test_failed_transaction_adds_nothing(metadata_store: MetadataStore) -> None:
    with pytest.raises(RuntimeError):
        with metadata_store.session() as s:
            s.add(t.Dataset(name="ghost"))
            s.flush()
            raise RuntimeError("abort")
    assert count(metadata_store, t.Dataset) == 0


# -- datasets --------------------------------------------------------------------------------

def _ds_fields(content_hash: str, **over) -> dict:
    fields = dict(content_hash=content_hash, kind="tabular", source="sample:iris", format="csv", rows=150,
                  schema={"features": {"x": "float"}, "target": "species"},
                  splits={"seed": 0, "fractions": [0.8, 0.1, 0.1], "counts": [120, 15, 15]},
                  artifact_prefix=f"datasets/{content_hash}")
    fields.update(over)
    return fields


def test_dataset_versions(metadata_store: MetadataStore) -> None:
    repo = DatasetRepo(metadata_store)
    assert repo.list() == []
    assert repo.next_version("iris") == 1
    v1 = repo.add_version("iris", 1, **_ds_fields("h1"))
    assert v1["ref"] == "iris:1" and v1["rows"] == 150 and v1["schema"]["target"] == "species"
    assert v1["splits"]["counts"] == [120, 15, 15]
    assert_utc_iso(v1["created_at"])
    assert repo.next_version("iris") == 2
    repo.add_version("iris", 2, **_ds_fields("h2", rows=151))
    repo.add_version("penguins", 1, **_ds_fields("h1"))  # same hash, other dataset: fine

    assert repo.get("iris", 1) == v1
    latest = repo.get("iris")
    assert latest["version"] == 2 and latest["rows"] == 151
    assert_utc_iso(latest["created_at"])
    assert [v["version"] for v in repo.versions("iris")] == [1, 2]
    assert repo.find_by_hash("iris", "h2")["version"] == 2
    assert repo.find_by_hash("iris", "nope") is None
    assert repo.find_by_hash("nope", "h1") is None

    listing = repo.list()
    assert [(d["name"], d["latest_version"], d["versions"]) for d in listing] == [("iris", 2, 2), ("penguins", 1, 1)]
    assert listing[0]["latest"]["version"] == 2


def test_dataset_not_found_messages(metadata_store: MetadataStore) -> None:
    repo = DatasetRepo(metadata_store)
    repo.add_version("iris", 1, **_ds_fields("h1"))
    with pytest.raises(NotFound, match="dataset 'wine' not found"):
        repo.get("wine")
    with pytest.raises(NotFound, match="dataset 'wine' not found"):
        repo.get("wine", 1)
    with pytest.raises(NotFound, match="dataset 'wine' not found"):
        repo.versions("wine")
    with pytest.raises(NotFound, match="dataset 'iris' has no version 7") as info:
        repo.get("iris", 7)
    assert "not found" not in info.value.message


def test_dataset_uniqueness_is_enforced_without_partial_rows(metadata_store: MetadataStore) -> None:
    repo = DatasetRepo(metadata_store)
    repo.add_version("iris", 1, **_ds_fields("h1"))
    with pytest.raises(Conflict):
        repo.add_version("iris", 1, **_ds_fields("h-other"))  # same (dataset, version)
    with pytest.raises(Conflict):
        repo.add_version("iris", 2, **_ds_fields("h1"))  # same (dataset, content_hash)
    assert [v["content_hash"] for v in repo.versions("iris")] == ["h1"]
    assert count(metadata_store, t.DatasetVersion) == 1

    # a new dataset whose first version fails: the dataset row is rolled back with it
    with pytest.raises(IntegrityError):
        repo.add_version("ghost", 1, **_ds_fields("h9", rows=None))
    with pytest.raises(NotFound, match="dataset 'ghost' not found"):
        repo.get("ghost")
    assert count(metadata_store, t.Dataset) == 1
    # and the store is still usable afterwards
    assert repo.add_version("iris", 2, **_ds_fields("h2"))["version"] == 2


# -- jobs ------------------------------------------------------------------------------------

def test_job_lifecycle_and_events(metadata_store: MetadataStore) -> None:
    repo = JobRepo(metadata_store)
    job = repo.create("train", {"dataset": "iris:1", "epochs": 3})
    assert job["status"] == QUEUED and job["spec"] == {"dataset": "iris:1", "epochs": 3}
    assert job["cancel_requested"] is False and job["started_at"] is None and job["ended_at"] is None
    assert_utc_iso(job["created_at"])
    assert [e["status"] for e in repo.events(job["id"])] == [QUEUED]
    assert repo.get(job["id"]) == job

    # only from an expected status; a refused move records nothing
    assert repo.transition(job["id"], SUCCEEDED, expect=[RUNNING]) is False
    assert repo.get(job["id"])["status"] == QUEUED
    assert len(repo.events(job["id"])) == 1

    assert repo.transition(job["id"], RUNNING, expect=[QUEUED], worker_host="h", worker_pid=42) is True
    running = repo.get(job["id"])
    assert running["status"] == RUNNING and running["worker"]["pid"] == 42 and running["ended_at"] is None
    started = assert_utc_iso(running["started_at"])
    assert_utc_iso(running["worker"]["heartbeat_at"])
    assert repo.transition(job["id"], RUNNING, expect=[QUEUED]) is False

    assert repo.transition(job["id"], FAILED, expect=[RUNNING], reason="out of memory") is True
    done = repo.get(job["id"])
    assert done["status"] == FAILED and done["reason"] == "out of memory"
    assert assert_utc_iso(done["ended_at"]) >= started
    assert repo.transition(job["id"], SUCCEEDED, expect=[QUEUED, RUNNING]) is False

    events = repo.events(job["id"])
    assert [e["status"] for e in events] == [QUEUED, RUNNING, FAILED]
    assert events[-1]["message"] == "out of memory"
    for e in events:
        assert_utc_iso(e["at"])

    assert repo.transition("job-missing", RUNNING, expect=[QUEUED]) is False
    with pytest.raises(NotFound, match="job-missing"):
        repo.get("job-missing")


def test_job_listing(metadata_store: MetadataStore) -> None:
    repo = JobRepo(metadata_store)
    a = repo.create("train", {}, job_id="job-a")
    b = repo.create("predict", {})
    repo.transition(a["id"], RUNNING, expect=[QUEUED])
    assert {j["id"] for j in repo.list()} == {"job-a", b["id"]}
    assert [j["id"] for j in repo.list(status=RUNNING)] == ["job-a"]
    assert [j["id"] for j in repo.list(kind="predict")] == [b["id"]]
    assert repo.ids_with_status(QUEUED, RUNNING) == ["job-a", b["id"]]
    assert repo.ids_with_status(SUCCEEDED) == []


def test_heartbeat_and_cancel(metadata_store: MetadataStore) -> None:
    repo = JobRepo(metadata_store)
    queued = repo.create("train", {})
    cancelled = repo.request_cancel(queued["id"])
    assert cancelled["status"] == CANCELLED and cancelled["ended_at"] is not None
    assert [e["status"] for e in repo.events(queued["id"])] == [QUEUED, CANCELLED]

    job = repo.create("train", {})
    repo.transition(job["id"], RUNNING, expect=[QUEUED])
    assert repo.heartbeat(job["id"], {"epoch": 1, "of": 3}) is False
    assert repo.get(job["id"])["progress"] == {"epoch": 1, "of": 3}
    after = repo.request_cancel(job["id"])
    assert after["status"] == RUNNING and after["cancel_requested"] is True
    assert repo.heartbeat(job["id"]) is True
    assert repo.get(job["id"])["progress"] == {"epoch": 1, "of": 3}  # no progress given: kept
    assert repo.transition(job["id"], CANCELLED, expect=[RUNNING], reason="cancelled by user")
    assert [e["status"] for e in repo.events(job["id"])] == [QUEUED, RUNNING, CANCELLED]

    with pytest.raises(NotFound):
        repo.request_cancel("job-missing")


def test_metrics_upsert_per_epoch(metadata_store: MetadataStore) -> None:
    repo = JobRepo(metadata_store)
    job = repo.create("train", {})
    other = repo.create("train", {})
    repo.add_metrics(job["id"], 2, {"loss": 0.5})
    repo.add_metrics(job["id"], 1, {"loss": 0.9, "accuracy": 0.4})
    repo.add_metrics(job["id"], 2, {"loss": 0.4, "accuracy": 0.7})  # same epoch again: replaced
    repo.add_metrics(other["id"], 1, {"loss": 9.0})
    assert repo.metrics(job["id"]) == [{"epoch": 1, "loss": 0.9, "accuracy": 0.4},
                                       {"epoch": 2, "loss": 0.4, "accuracy": 0.7}]
    assert count(metadata_store, t.JobMetric) == 3


def test_logs_append_and_paging(metadata_store: MetadataStore) -> None:
    repo = JobRepo(metadata_store)
    job = repo.create("train", {})
    other = repo.create("train", {})
    repo.append_logs(job["id"], [])
    assert repo.logs(job["id"]) == []
    repo.append_logs(job["id"], ["line 1", "line 2", "line 3"])
    repo.append_logs(other["id"], ["other"])
    repo.append_logs(job["id"], ["line 4", "ünïcode ✓"])

    all_lines = repo.logs(job["id"])
    assert [r["text"] for r in all_lines] == ["line 1", "line 2", "line 3", "line 4", "ünïcode ✓"]
    ids = [r["id"] for r in all_lines]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for r in all_lines:
        assert_utc_iso(r["at"])

    page1 = repo.logs(job["id"], limit=2)
    page2 = repo.logs(job["id"], after=page1[-1]["id"], limit=2)
    page3 = repo.logs(job["id"], after=page2[-1]["id"], limit=2)
    assert [r["text"] for r in page1 + page2 + page3] == [r["text"] for r in all_lines]
    assert repo.logs(job["id"], after=page3[-1]["id"]) == []


# -- models ----------------------------------------------------------------------------------

def _mv_fields(**over) -> dict:
    fields = dict(kind="tabular", template="tabular_mlp", hparams={"units": 32}, metrics={"accuracy": 0.9},
                  lineage={"dataset": "iris:1"}, runtimes=["keras", "onnx"], artifact_prefix="models/m/x",
                  job_id="job-1", dataset="iris:1")
    fields.update(over)
    return fields


def test_model_versions_and_lookup(metadata_store: MetadataStore) -> None:
    repo = ModelRepo(metadata_store)
    assert repo.next_version("clf") == 1
    v1 = repo.add_version("clf", 1, **_mv_fields())
    assert v1["ref"] == "clf:1" and v1["aliases"] == [] and v1["runtimes"] == ["keras", "onnx"]
    assert v1["trusted"] is False
    assert_utc_iso(v1["created_at"])
    repo.add_version("clf", 2, **_mv_fields(metrics={"accuracy": 0.95}, trusted=True))
    assert repo.next_version("clf") == 3

    assert repo.get("clf")["version"] == 2
    assert repo.get("clf", 1) == v1
    assert [v["version"] for v in repo.versions("clf")] == [1, 2]
    listing = repo.list()
    assert listing[0]["name"] == "clf" and listing[0]["versions"] == 2 and listing[0]["latest_version"] == 2
    assert listing[0]["latest_metrics"] == {"accuracy": 0.95}
    assert_utc_iso(listing[0]["created_at"])

    with pytest.raises(NotFound, match="model 'nope' not found"):
        repo.get("nope")
    with pytest.raises(NotFound, match="model 'clf' has no version 9"):
        repo.get("clf", 9)
    with pytest.raises(NotFound, match="model 'clf' has no alias 'prod'"):
        repo.get("clf", alias="prod")
    with pytest.raises(IntegrityError):
        repo.add_version("clf", 2, **_mv_fields())
    assert len(repo.versions("clf")) == 2


def test_aliases_move_with_history(metadata_store: MetadataStore) -> None:
    repo = ModelRepo(metadata_store)
    for v in (1, 2, 3):
        repo.add_version("clf", v, **_mv_fields())

    assert repo.set_alias("clf", "prod", 1, actor="alice") == {"name": "clf", "alias": "prod", "version": 1,
                                                                "previous": None}
    assert repo.get("clf", alias="prod")["version"] == 1
    assert repo.get("clf", 1)["aliases"] == ["prod"]
    assert repo.set_alias("clf", "prod", 2, actor="bob")["previous"] == 1
    repo.set_alias("clf", "staging", 2)
    repo.set_alias("clf", "Canary_1-b", 3)
    got = repo.get("clf", alias="prod")
    assert got["version"] == 2 and got["aliases"] == ["prod", "staging"]
    assert repo.get("clf", 1)["aliases"] == []
    assert {v["version"]: v["aliases"] for v in repo.versions("clf")} == {1: [], 2: ["prod", "staging"],
                                                                         3: ["Canary_1-b"]}
    assert repo.list()[0]["aliases"] == {"prod": 2, "staging": 2, "Canary_1-b": 3}

    repo.delete_alias("clf", "staging", actor="carol")
    with pytest.raises(NotFound, match="no alias 'staging'"):
        repo.get("clf", alias="staging")
    with pytest.raises(NotFound, match="no alias 'staging'"):
        repo.delete_alias("clf", "staging")

    history = repo.alias_history("clf")
    assert [(h["alias"], h["from_version"], h["to_version"], h["actor"]) for h in history] == [
        ("prod", None, 1, "alice"), ("prod", 1, 2, "bob"), ("staging", None, 2, None),
        ("Canary_1-b", None, 3, None), ("staging", 2, None, "carol")]
    for h in history:
        assert_utc_iso(h["at"])


def test_alias_to_missing_version_or_model(metadata_store: MetadataStore) -> None:
    repo = ModelRepo(metadata_store)
    repo.add_version("clf", 1, **_mv_fields())
    with pytest.raises(NotFound, match="model 'clf' has no version 5"):
        repo.set_alias("clf", "prod", 5)
    with pytest.raises(NotFound, match="model 'nope' not found"):
        repo.set_alias("nope", "prod", 1)
    with pytest.raises(NotFound, match="model 'nope' not found"):
        repo.alias_history("nope")
    assert repo.alias_history("clf") == []
    assert count(metadata_store, t.ModelAlias) == 0


# -- deletions (issue 10 item 13) ---------------------------------------------------------------

def _endpoint(store: MetadataStore, name: str, spec_ref: dict, resolved_version: int) -> None:
    from loopml.store.endpoints_repo import EndpointRepo

    variant = {"name": "primary", "weight": 1.0, **spec_ref}
    EndpointRepo(store).create(name, {"variants": [variant], "shadow": None},
                               {"variants": [{**variant, "version": resolved_version,
                                              "artifact_prefix": "x", "kind": "tabular"}], "shadow": None})


def test_model_version_delete_is_refused_while_in_use(metadata_store: MetadataStore) -> None:
    from loopml.store.deletions_repo import DeletionRepo
    from loopml.store.endpoints_repo import EndpointRepo

    models, dels, jobs = ModelRepo(metadata_store), DeletionRepo(metadata_store), JobRepo(metadata_store)
    for v in (1, 2, 3, 4):
        models.add_version("clf", v, **_mv_fields(artifact_prefix=f"models/clf/v{v}"))
    models.set_alias("clf", "production", 1)
    _endpoint(metadata_store, "pinned", {"model": "clf", "version": 2, "alias": None}, 2)
    predict = jobs.create("predict", {"model": "clf:3", "model_name": "clf", "model_version": 3})
    baseline = jobs.create("baseline", {"model": "clf", "version": 3})

    with pytest.raises(Conflict, match=r"clf:1 is in use by alias clf@production") as info:
        dels.delete_model_version("clf", 1)
    assert info.value.details["dependents"] == ["alias clf@production (-> 1)"]
    with pytest.raises(Conflict, match="endpoint pinned"):
        dels.delete_model_version("clf", 2)
    with pytest.raises(Conflict, match=f"queued job {predict['id']}") as info:
        dels.delete_model_version("clf", 3)
    assert f"queued job {baseline['id']}" in info.value.message
    with pytest.raises(Conflict) as info:  # every dependent of every version, in one line
        dels.delete_model("clf")
    assert len(info.value.details["dependents"]) == 4
    assert [v["version"] for v in models.versions("clf")] == [1, 2, 3, 4] and dels.pending() == []

    # an endpoint that follows the alias holds the version the alias points at, even after a move
    models.set_alias("clf", "production", 4)
    _endpoint(metadata_store, "follower", {"model": "clf", "version": None, "alias": "production"}, 4)
    models.delete_alias("clf", "production")
    with pytest.raises(Conflict, match="endpoint follower"):
        dels.delete_model_version("clf", 4)
    EndpointRepo(metadata_store).delete("follower")

    out = dels.delete_model_version("clf", 4)
    assert out["deleted"] == ["clf:4"] and [a["prefix"] for a in out["artifacts"]] == ["models/clf/v4"]
    with pytest.raises(NotFound, match="has no version 4"):
        models.get("clf", 4)
    assert models.next_version("clf") == 5  # a deleted number is never handed out again
    assert models.add_next_version("clf", fields={k: v for k, v in _mv_fields().items() if k != "job_id"}
                                   )["version"] == 5
    with pytest.raises(NotFound, match="has no version 4"):
        dels.delete_model_version("clf", 4)
    with pytest.raises(NotFound, match="model 'nope' not found"):
        dels.delete_model("nope")


def test_whole_model_delete_takes_versions_and_alias_history(metadata_store: MetadataStore) -> None:
    from loopml.store.deletions_repo import DeletionRepo

    models, dels = ModelRepo(metadata_store), DeletionRepo(metadata_store)
    models.add_version("gone", 1, **_mv_fields(artifact_prefix="models/gone/a"))
    models.add_version("gone", 2, **_mv_fields(artifact_prefix="models/gone/b"))
    models.set_alias("gone", "staging", 1)
    models.delete_alias("gone", "staging")
    out = dels.delete_model("gone")
    assert out["deleted"] == ["gone:1", "gone:2"]
    assert sorted(a["prefix"] for a in dels.pending()) == ["models/gone/a", "models/gone/b"]
    assert count(metadata_store, t.ModelVersion) == 0 and count(metadata_store, t.AliasEvent) == 0
    with pytest.raises(NotFound):
        models.versions("gone")
    assert models.list() == [] and count(metadata_store, t.Model) == 0


def test_a_deleted_model_name_keeps_its_version_numbers(metadata_store: MetadataStore) -> None:
    """Traffic, alias history, workflow histories and the serving cache name ``gone:1``: a name
    created again after a whole-model delete continues numbering, it never reuses a number."""
    from loopml.store.deletions_repo import DeletionRepo

    models, dels = ModelRepo(metadata_store), DeletionRepo(metadata_store)
    fields = {k: v for k, v in _mv_fields().items() if k != "job_id"}
    for v in (1, 2, 3):
        models.add_version("gone", v, **_mv_fields(artifact_prefix=f"models/gone/{v}"))
    dels.delete_model_version("gone", 3)  # the highest number retired before the whole delete
    dels.delete_model("gone")
    assert models.next_version("gone") == 4
    assert models.add_next_version("gone", fields=fields)["ref"] == "gone:4"
    assert [m["name"] for m in models.list()] == ["gone"]
    assert [v["version"] for v in models.versions("gone")] == [4]
    # deleted again (now its highest number is live), and again created: still counting up
    dels.delete_model("gone")
    assert models.next_version("gone") == 5
    assert models.add_version("gone", models.next_version("gone"), **_mv_fields())["version"] == 5
    # a third time; other names are not affected
    models.add_version("other", 1, **_mv_fields())
    dels.delete_model("gone")
    assert models.next_version("gone") == 6 and models.next_version("other") == 2
    with pytest.raises(NotFound, match="model 'gone' not found"):
        models.versions("gone")


def test_dataset_delete_refusals_force_and_outbox(metadata_store: MetadataStore) -> None:
    from loopml.store.deletions_repo import DeletionRepo

    ds, models, dels, jobs = (DatasetRepo(metadata_store), ModelRepo(metadata_store), DeletionRepo(metadata_store),
                              JobRepo(metadata_store))
    ds.add_version("iris", 1, **_ds_fields("h1", artifact_prefix="datasets/iris/h1"))
    ds.add_version("iris", 2, **_ds_fields("h2", artifact_prefix="datasets/iris/h2"))
    ds.add_version("iris", 3, **_ds_fields("h3", artifact_prefix="datasets/iris/h3"))
    models.add_version("clf", 1, **_mv_fields(dataset="iris:1"))
    train = jobs.create("train", {"dataset": "iris:2", "dataset_name": "iris", "dataset_version": 2})

    with pytest.raises(Conflict, match=r"iris:1 is in use by model version clf:1 \(trained on it\); --force"):
        dels.delete_dataset_version("iris", 1)
    with pytest.raises(Conflict, match=f"queued job {train['id']}"):
        dels.delete_dataset_version("iris", 2, force=True)  # a job reading it: never, even forced
    with pytest.raises(Conflict, match="queued job"):
        dels.delete_dataset("iris", force=True)

    out = dels.delete_dataset_version("iris", 1, force=True)
    assert out["deleted"] == ["iris:1"] and models.get("clf", 1)["dataset"] == "iris:1"  # the model stays
    assert [v["version"] for v in ds.versions("iris")] == [2, 3]
    ds_pending = dels.pending()
    assert [a["prefix"] for a in ds_pending] == ["datasets/iris/h1"]

    # the outbox: a prefix a live record uses is never removed; finish() empties the row
    assert dels.prefix_in_use("datasets/iris/h2") and dels.prefix_in_use("datasets/iris")
    assert not dels.prefix_in_use("datasets/iris/h1")
    dels.finish(ds_pending[0]["id"])
    assert dels.pending() == []

    jobs.transition(train["id"], CANCELLED, expect=[QUEUED])
    out = dels.delete_dataset("iris")
    assert out["deleted"] == ["iris:2", "iris:3"] and ds.list() == []
    # a whole dataset deleted: the name keeps its numbers (lineage such as "iris:2" stays unambiguous)
    assert ds.next_version("iris") == 4
    assert ds.add_version("iris", 4, **_ds_fields("h1"))["version"] == 4
    assert [d["name"] for d in ds.list()] == ["iris"] and ds.get("iris")["version"] == 4
    dels.delete_dataset("iris")
    assert ds.list() == [] and ds.next_version("iris") == 5
    with pytest.raises(NotFound, match="dataset 'iris' not found"):
        ds.get("iris")
    assert ds.next_version("other") == 1


def test_dataset_version_numbers_are_not_reused(metadata_store: MetadataStore) -> None:
    from loopml.store.deletions_repo import DeletionRepo

    ds = DatasetRepo(metadata_store)
    ds.add_version("iris", 1, **_ds_fields("h1"))
    ds.add_version("iris", 2, **_ds_fields("h2"))
    DeletionRepo(metadata_store).delete_dataset_version("iris", 2)
    assert ds.get("iris")["version"] == 1 and ds.next_version("iris") == 3
    DeletionRepo(metadata_store).delete_dataset_version("iris", 1)
    with pytest.raises(NotFound, match="dataset 'iris' has no versions"):
        ds.get("iris")
    assert ds.next_version("iris") == 3


def test_job_delete_refused_while_active_and_takes_its_history(metadata_store: MetadataStore) -> None:
    from loopml.store.deletions_repo import DeletionRepo

    jobs, dels = JobRepo(metadata_store), DeletionRepo(metadata_store)
    job = jobs.create("train", {"dataset": "iris:1"})
    with pytest.raises(Conflict, match=f"job {job['id']} is queued; cancel it first"):
        dels.delete_job(job["id"])
    jobs.transition(job["id"], RUNNING, expect=[QUEUED])
    jobs.add_metrics(job["id"], 1, {"loss": 0.5})
    jobs.append_logs(job["id"], ["epoch 1"])
    with pytest.raises(Conflict, match="is running"):
        dels.delete_job(job["id"])
    jobs.transition(job["id"], SUCCEEDED, expect=[RUNNING],
                    result={"artifact_prefix": f"models/m/{job['id']}", "registered": False})
    evaluate = jobs.create("evaluate", {"models": {"challenger": {"ref": f"job:{job['id']}", "job_id": job["id"]}}})
    with pytest.raises(Conflict, match=f"queued job {evaluate['id']}"):
        dels.delete_job(job["id"])
    jobs.transition(evaluate["id"], CANCELLED, expect=[QUEUED])

    out = dels.delete_job(job["id"])
    assert out["deleted"] == [job["id"]]
    assert [a["prefix"] for a in out["artifacts"]] == [f"jobs/{job['id']}", f"models/m/{job['id']}"]
    for table in (t.JobEvent, t.JobMetric, t.JobLog):
        with metadata_store.session() as s:
            assert s.execute(select(func.count()).select_from(table)
                             .where(table.job_id == job["id"])).scalar_one() == 0
    with pytest.raises(NotFound):
        jobs.get(job["id"])


def test_retired_names_keep_the_highest_number_per_kind(metadata_store: MetadataStore) -> None:
    from loopml.store.retired import retire, retired_top

    with metadata_store.session() as s:
        assert retired_top(s, "model", "gone") == 0
        retire(s, "model", "gone", 5)
        retire(s, "model", "gone", 3)  # a lower mark never lowers it
        retire(s, "dataset", "gone", 2)  # the same name as a dataset is its own record
    with metadata_store.session() as s:
        assert (retired_top(s, "model", "gone"), retired_top(s, "dataset", "gone")) == (5, 2)
        retire(s, "model", "gone", 9)
    with pytest.raises(RuntimeError):
        with metadata_store.session() as s:
            retire(s, "model", "gone", 20)
            raise RuntimeError("the delete's transaction failed")
    with metadata_store.session() as s:
        assert retired_top(s, "model", "gone") == 9  # the rolled-back mark is not kept
    assert count(metadata_store, t.RetiredName) == 2
    assert ModelRepo(metadata_store).next_version("gone") == 10
    assert DatasetRepo(metadata_store).next_version("gone") == 3


def test_outbox_rows_are_written_with_the_delete_and_finished_one_by_one(metadata_store: MetadataStore) -> None:
    from loopml.store.deletions_repo import DeletionRepo

    models, dels, jobs = ModelRepo(metadata_store), DeletionRepo(metadata_store), JobRepo(metadata_store)
    models.add_version("clf", 1, **_mv_fields(artifact_prefix="models/clf/v1"))
    models.add_version("clf", 2, **_mv_fields(artifact_prefix="models/clf/v2"))
    models.set_alias("clf", "prod", 2)
    job = jobs.create("train", {})
    jobs.transition(job["id"], FAILED, expect=[QUEUED], reason="x")

    with pytest.raises(Conflict):
        dels.delete_model("clf")  # refused: no outbox row either
    assert dels.pending() == [] and count(metadata_store, t.ArtifactDeletion) == 0
    assert dels.prefix_in_use("models/clf/v1") and dels.prefix_in_use("models/clf/")
    first = dels.delete_model_version("clf", 1)["artifacts"]
    second = dels.delete_job(job["id"])["artifacts"]
    assert [(a["prefix"], a["what"]) for a in first] == [("models/clf/v1", "model clf:1")]
    assert [a["prefix"] for a in second] == [f"jobs/{job['id']}"]  # no bundle: only its folder
    pending = dels.pending()
    assert pending == first + second  # in the order they were written
    assert not dels.prefix_in_use("models/clf/v1") and dels.prefix_in_use("models/clf/v2")
    assert not dels.prefix_in_use("models/clf/v")  # a prefix is a folder, not a string prefix
    dels.finish(first[0]["id"])
    dels.finish(first[0]["id"])  # finishing twice (a sweep after a crash) is harmless
    assert dels.pending() == second


def test_job_listing_pages_with_offset(metadata_store: MetadataStore) -> None:
    """limit/offset walk the newest-first list without repeating or skipping a job (the dashboard's pager)."""
    repo = JobRepo(metadata_store)
    made = [repo.create("train", {}, job_id=f"job-{i}")["id"] for i in range(5)]
    everything = [j["id"] for j in repo.list()]
    assert sorted(everything) == sorted(made)
    pages = [[j["id"] for j in repo.list(limit=2, offset=o)] for o in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 2, 1] and sum(pages, []) == everything
    assert repo.list(offset=5) == []
    assert [j["id"] for j in repo.list(kind="train", limit=1, offset=1)] == everything[1:2]
