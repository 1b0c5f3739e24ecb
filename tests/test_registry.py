"""The registry service: one reference grammar, resolution against a real store, alias rules and
history, registration from a job, and the champion/challenger decision."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.registry import aliases
from loopml.registry.champion import decide
from loopml.registry.refs import ModelRef, check_alias_name, parse_model_ref
from loopml.registry.registration import register_trained, validate_model_name
from loopml.registry.resolve import candidate, resolve


def add_version(platform, name: str, version: int, **over) -> dict:
    fields = dict(job_id=None, dataset="tab:1", kind="tabular", template="mlp", hparams={}, metrics={},
                  lineage={}, runtimes=["onnx"], artifact_prefix=f"models/{name}/v{version}")
    return platform.models.add_version(name, version, **{**fields, **over})


# -- references ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ref", [
    ("mnist-cnn", ModelRef(name="mnist-cnn")),
    ("mnist-cnn:latest", ModelRef(name="mnist-cnn")),
    ("mnist-cnn:3", ModelRef(name="mnist-cnn", version=3)),
    (" mnist-cnn@production ", ModelRef(name="mnist-cnn", alias="production")),
    ("job:job-0123456789", ModelRef(job_id="job-0123456789")),
])
def test_every_reference_form_parses_to_one_typed_ref(text, ref) -> None:
    parsed = parse_model_ref(text)
    assert parsed == ref and ModelRef.parse(text) == ref
    assert parse_model_ref(str(parsed)) == parsed  # the canonical text reads back the same


def test_ref_properties_and_canonical_text() -> None:
    assert parse_model_ref("m").is_latest and str(parse_model_ref("m:latest")) == "m"
    assert not parse_model_ref("m:2").is_latest and str(parse_model_ref("m:2")) == "m:2"
    job = parse_model_ref("job:abc")
    assert job.is_job and job.name is None and str(job) == "job:abc"


@pytest.mark.parametrize("text, says", [
    ("", "empty"),
    ("   ", "empty"),
    (None, "empty"),
    ("m:x", "version 'x' must be a number"),
    ("m:1.5", "must be a number"),
    (":3", "names no model"),
    ("@prod", "use NAME@ALIAS"),
    ("m@", "use NAME@ALIAS"),
    ("m@a@b", "use NAME@ALIAS"),
    ("m:1@prod", "not both"),
    ("m@prod:1", "not both"),
    ("job:", "job:ID"),
    ("job:a:b", "job:ID"),
])
def test_bad_references_are_invalid_input_naming_the_forms(text, says) -> None:
    with pytest.raises(InvalidInput, match=says) as info:
        parse_model_ref(text)
    assert info.value.status == 400 and info.value.code == "invalid_input"


def test_parsing_needs_no_store_and_no_numpy() -> None:
    """The CLI parses references at its start: refs.py must stay free of SQLAlchemy and numpy."""
    code = ("import sys, loopml.registry.refs; heavy = {'sqlalchemy', 'numpy', 'keras', 'tensorflow'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- resolution on a real store --------------------------------------------------------------------

def test_resolution_of_every_form(platform) -> None:
    for v in (1, 2, 3):
        add_version(platform, "clf", v)
    aliases.set_alias(platform, "clf", "production", 2)
    assert resolve(platform, "clf")["ref"] == "clf:3"
    assert resolve(platform, "clf:latest")["ref"] == "clf:3"
    assert resolve(platform, "clf:1")["ref"] == "clf:1"
    got = resolve(platform, "clf@production")
    assert got["ref"] == "clf:2" and got["aliases"] == ["production"]
    assert resolve(platform, ModelRef(name="clf", alias="production"))["version"] == 2
    with pytest.raises(NotFound, match="has no version 9"):
        resolve(platform, "clf:9")
    with pytest.raises(NotFound, match="has no alias 'staging'"):
        resolve(platform, "clf@staging")
    with pytest.raises(NotFound, match="model 'clff' not found; did you mean 'clf'"):
        resolve(platform, "clff@production")


def _trained(platform, job_id: str, *, registered: str | None = None) -> None:
    platform.jobs.create("train", {"kind": "tabular", "register_as": "clf"}, job_id=job_id)
    platform.jobs.transition(job_id, "running", expect=["queued"])
    result = {"artifact_prefix": f"models/clf/{job_id}", "register_as": "clf",
              "registration": {"dataset": "tab:1", "kind": "tabular", "template": "mlp", "hparams": {},
                               "metrics": {"accuracy": 0.9}, "lineage": {"job_id": job_id},
                               "runtimes": ["onnx"], "artifact_prefix": f"models/clf/{job_id}"}}
    if registered:
        name, _, version = registered.partition(":")
        result["model"] = {"name": name, "version": int(version), "ref": registered}
    platform.jobs.transition(job_id, "succeeded", expect=["running"], result=result)


def test_job_references_resolve_once_registered(platform) -> None:
    _trained(platform, "job-a")
    with pytest.raises(InvalidInput, match="job:job-a is not a registered model version: register it first"):
        resolve(platform, "job:job-a")
    record = register_trained(platform, "job-a")
    assert record["ref"] == "clf:1" and record["job_id"] == "job-a"
    assert resolve(platform, "job:job-a")["ref"] == "clf:1"
    assert register_trained(platform, "job-a")["created_at"] == record["created_at"]  # idempotent
    with pytest.raises(Conflict, match="already registered as clf:1"):
        register_trained(platform, "job-a", name="other")

    with pytest.raises(NotFound, match="job-missing"):
        resolve(platform, "job:job-missing")
    platform.jobs.create("predict", {}, job_id="job-p")
    with pytest.raises(InvalidInput, match="is a predict job, not a training job"):
        resolve(platform, "job:job-p")
    platform.jobs.create("train", {}, job_id="job-q")
    with pytest.raises(Conflict, match="queued; only a succeeded training job has a model"):
        register_trained(platform, "job-q")


def test_evaluation_candidates(platform) -> None:
    add_version(platform, "clf", 1, trusted=True)
    _trained(platform, "job-c")
    assert candidate(platform, "challenger", "job:job-c") == {
        "ref": "job:job-c", "job_id": "job-c", "artifact_prefix": "models/clf/job-c", "kind": "tabular",
        "trusted": False}
    # a first deployment has no champion: recorded, not refused
    assert candidate(platform, "champion", "clf@production") == {
        "ref": "clf@production", "missing": "alias production of clf is not set"}
    aliases.set_alias(platform, "clf", "production", 1)
    assert candidate(platform, "champion", "clf@production") == {
        "ref": "clf@production", "name": "clf", "version": 1, "resolved": "clf:1",
        "artifact_prefix": "models/clf/v1", "kind": "tabular", "trusted": True}
    for ref, says in (("clf:4", "models.champion: model 'clf' has no version 4"),
                      ("clf:x", "models.champion: .*must be a number"), ("", "models.champion: a model reference"),
                      ("job:job-none", "models.champion: .*job-none")):
        with pytest.raises(InvalidInput, match=says):
            candidate(platform, "champion", ref)


# -- aliases: rules and history --------------------------------------------------------------------

def test_alias_names_follow_the_rule() -> None:
    for alias in ["", "1prod", "latest", "has space", "pr/od", "a" * 65, "prod!", "-x", "é", "x\n", None]:
        with pytest.raises(InvalidInput, match="alias"):
            check_alias_name(alias)
            pytest.fail(f"alias {alias!r} was accepted")
    assert check_alias_name("a" * 64) == "a" * 64 and check_alias_name("Canary_1-b") == "Canary_1-b"


def test_alias_moves_are_checked_and_recorded(platform) -> None:
    add_version(platform, "clf", 1)
    add_version(platform, "clf", 2)
    with pytest.raises(InvalidInput, match="'latest' is reserved"):
        aliases.set_alias(platform, "clf", "latest", 1)
    with pytest.raises(NotFound, match="model 'clf' has no version 5"):
        aliases.set_alias(platform, "clf", "production", 5)
    assert aliases.set_alias(platform, "clf", "production", 1, actor="alice") == {
        "name": "clf", "alias": "production", "version": 1, "previous": None}
    assert aliases.set_alias(platform, "clf", "production", 2, actor="bob")["previous"] == 1
    assert [(h["alias"], h["from_version"], h["to_version"], h["actor"]) for h in aliases.history(platform, "clf")] \
        == [("production", None, 1, "alice"), ("production", 1, 2, "bob")]


def test_an_alias_endpoints_follow_is_removed_only_by_force(platform) -> None:
    from loopml.serving import service as endpoints

    for v in (1, 2):
        add_version(platform, "clf", v)
    aliases.set_alias(platform, "clf", "production", 1)
    aliases.set_alias(platform, "clf", "staging", 2)
    endpoints.create_endpoint(platform, "front", {"model": "clf@production"})
    endpoints.create_endpoint(platform, "canary", {"model": "clf:1", "shadow": "clf@staging"})
    assert aliases.followers(platform, "clf", "production") == [{"kind": "endpoint", "name": "front"}]
    assert aliases.followers(platform, "clf", "staging") == [{"kind": "endpoint", "name": "canary"}]

    with pytest.raises(Conflict, match="alias clf@staging is used by endpoint canary") as info:
        aliases.delete_alias(platform, "clf", "staging", actor="carol")
    assert info.value.details["dependents"] == [{"kind": "endpoint", "name": "canary"}]
    assert resolve(platform, "clf@staging")["version"] == 2  # still there
    gone = aliases.delete_alias(platform, "clf", "staging", actor="carol", force=True)
    assert gone == {"name": "clf", "alias": "staging", "version": None, "previous": 2,
                    "broken": [{"kind": "endpoint", "name": "canary"}]}
    assert aliases.history(platform, "clf")[-1] == {**aliases.history(platform, "clf")[-1], "alias": "staging",
                                                     "from_version": 2, "to_version": None, "actor": "carol"}
    with pytest.raises(NotFound, match="no alias 'staging'"):
        aliases.delete_alias(platform, "clf", "staging")


# -- registration ------------------------------------------------------------------------------------

def test_model_names_reserve_job() -> None:
    assert validate_model_name("mnist-cnn") == "mnist-cnn"
    with pytest.raises(InvalidInput, match="reserved"):
        validate_model_name("job")
    with pytest.raises(InvalidInput, match="model name"):
        validate_model_name("Bad Name")


# -- champion / challenger ---------------------------------------------------------------------------

def test_the_champion_decision() -> None:
    keep = decide({"challenger": {"ref": "job:a", "accuracy": 0.90}, "champion": {"ref": "m:1", "accuracy": 0.91}},
                  "accuracy", 0.0)
    assert keep["promote"] is False and keep["improvement"] == -0.01 and keep["reason"].endswith("keep champion")
    promote = decide({"challenger": {"ref": "job:a", "accuracy": 0.95}, "champion": {"ref": "m:1", "accuracy": 0.9}},
                     "accuracy", 0.05)
    assert promote["promote"] is True  # exactly the minimum improvement promotes
    lower = decide({"challenger": {"ref": "job:a", "loss": 0.3}, "champion": {"ref": "m:1", "loss": 0.2}}, "loss", 0)
    assert lower["promote"] is False and lower["improvement"] == -0.1  # a loss: lower is better
    first = decide({"challenger": {"ref": "job:a", "accuracy": 0.5},
                    "champion": {"ref": "m@production", "missing": "alias production of m is not set"}},
                   "accuracy", 0.1)
    assert first["promote"] is True and "no champion" in first["reason"]
    broken = decide({"challenger": {"ref": "job:a", "missing": "gone"}, "champion": {"ref": "m:1", "accuracy": 0.1}},
                    "accuracy", 0.0)
    assert broken["promote"] is False
