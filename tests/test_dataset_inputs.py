"""What a new user's tables do (issue 10): extending a CSV dataset keeps its label column, a
continuous label is refused, free text in a CSV is read as text. Real control plane, real
SQLite, CSVs made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopml.core.errors import InvalidInput
from loopml.datasets.formats import read_source
from loopml.datasets.service import register
from tests.surface_support import assert_error, cli_runner

SPECIES = ("Adelie", "Chinstrap", "Gentoo")


def penguins_like(path: Path, rows: int = 60, seed: int = 0) -> Path:
    """A penguins-shaped table whose label column, 'kind', is not one LoopML guesses."""
    rng = np.random.default_rng(seed)
    pd.DataFrame({
        "island": rng.choice(["Biscoe", "Dream", "Torgersen"], rows),
        "bill_length_mm": rng.normal(44, 5, rows).round(1),
        "flipper_length_mm": rng.integers(172, 231, rows),
        "body_mass_g": rng.integers(2700, 6300, rows),
        "kind": [SPECIES[i % 3] for i in range(rows)],
    }).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------ item 5: --extend inherits


def test_extend_inherits_the_label_column_sdk_and_cli(live_server, tmp_path, monkeypatch):
    from loopml.sdk.client import Client

    first = penguins_like(tmp_path / "penguins.csv", rows=60)
    more = penguins_like(tmp_path / "more.csv", rows=9, seed=1)
    c = Client(live_server)
    v1 = c.add_dataset("birds", str(first), label="kind")
    assert v1["schema"]["label"] == "kind" and v1["schema"]["classes"] == list(SPECIES)

    v2 = c.add_dataset("birds", str(more), extend=True)  # no label: kind, as version 1 said
    assert (v2["version"], v2["rows"], v2["schema"]["label"]) == (2, 69, "kind")
    assert v2["format"] == "csv" and v2["kind"] == "tabular"

    run = cli_runner(live_server, monkeypatch)
    again = penguins_like(tmp_path / "again.csv", rows=6, seed=2)
    out = run("datasets", "add", "birds", str(again), "--extend")
    assert out.exit_code == 0, out.output
    assert "birds:3" in out.stdout and "75 rows, 3 classes" in out.stdout
    assert c.dataset("birds:3")["schema"]["label"] == "kind"

    # a server-visible path through POST /datasets inherits too
    import httpx

    r = httpx.post(f"{live_server}/datasets", json={"name": "birds", "source": str(more), "extend": True})
    assert r.status_code == 201 and r.json()["rows"] == 84, r.text

    # a batch of a table is read as a table, even if a column of it looks like sentences
    notes = pd.read_csv(more).assign(island=[f"seen near rock {i} today" for i in range(9)])
    notes.to_csv(tmp_path / "notes.csv", index=False)
    assert c.add_dataset("birds", str(tmp_path / "notes.csv"), extend=True)["kind"] == "tabular"


def test_extend_inherits_the_text_column_and_format(platform, tmp_path):
    # short texts are not guessed as text: version 1 said --format text --text note
    def notes(path: Path, rows: int, seed: int) -> Path:
        rng = np.random.default_rng(seed)
        words = ["ok", "bad", "fine", "late", "good"]
        pd.DataFrame({"note": [" ".join(rng.choice(words, 2)) for _ in range(rows)],
                      "grade": [("pass", "fail")[i % 2] for i in range(rows)]}).to_csv(path, index=False)
        return path

    v1 = register(platform, "notes", str(notes(tmp_path / "a.csv", 20, 0)), fmt="text", label="grade", text="note")
    assert v1["kind"] == "text" and v1["format"] == "text"
    v2 = register(platform, "notes", str(notes(tmp_path / "b.csv", 4, 1)), extend=True)
    assert (v2["kind"], v2["rows"], v2["format"]) == ("text", 24, "text")
    assert v2["schema"]["label"] == "grade" and v2["schema"]["text"] == "note"
    # a file whose extension names no format is read in the format of the version it extends
    register(platform, "birds", str(penguins_like(tmp_path / "p.csv")), label="kind")
    batch = penguins_like(tmp_path / "batch.data", rows=6, seed=4)
    v2 = register(platform, "birds", str(batch), extend=True)
    assert (v2["rows"], v2["format"], v2["schema"]["label"]) == (66, "csv", "kind")


def test_readme_ingest_function_extends_a_csv_dataset(settings, live_server, tmp_path):
    """The README's ingest pattern (examples/functions/ingest_new_data.py) on a CSV dataset."""
    from loopml.sdk.client import Client

    c = Client(live_server)
    c.add_dataset("birds", str(penguins_like(tmp_path / "penguins.csv")), label="kind")
    code = Path(__file__).resolve().parents[1] / "examples" / "functions" / "ingest_new_data.py"
    c.create_workflow("retrain-birds", {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    c.create_function("ingest-birds", str(code), environment={"DATASET": "birds", "WORKFLOW": "retrain-birds"},
                      timeout_s=120)
    batch = penguins_like(tmp_path / "batch.csv", rows=6, seed=3)
    event = {"uri": str(batch), "Records": [{"s3": {"object": {"key": "incoming/batch.csv", "size": 1}}}]}
    out = c.invoke_function("ingest-birds", event)
    assert out["status"] == "succeeded", (out.get("error_message"), out.get("logs"))
    assert out["result"]["dataset"] == "birds:2" and out["result"]["rows"] == 66


# ------------------------------------------------------------------ item 15: what the models can't do


def test_a_continuous_label_is_refused_with_the_fix(live_server, tmp_path, monkeypatch):
    path = penguins_like(tmp_path / "penguins.csv", rows=300)
    n = pd.read_csv(path)["body_mass_g"].nunique()
    run = cli_runner(live_server, monkeypatch)
    out = run("datasets", "add", "birds", str(path), "--label", "body_mass_g")
    assert out.exit_code == 2 and out.stdout == "", out.output
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"label column body_mass_g looks continuous ({n} distinct numeric values in 300 rows)" in line
    assert "LoopML's models classify" in line and "--label COLUMN" in line and "label=" not in line
    import httpx

    r = httpx.post(f"{live_server}/datasets", json={"name": "birds", "source": str(path), "label": "body_mass_g"})
    body = assert_error(r, 400, "invalid_input", "looks continuous", "label=COLUMN")
    assert body["details"]["field"] == "label"
    assert httpx.get(f"{live_server}/datasets").json() == []  # nothing half-registered
    # a categorical column of the same file is fine, and so are integer class codes
    assert run("datasets", "add", "birds", str(path), "--label", "kind").exit_code == 0


def test_the_continuous_rule_keeps_class_codes_and_small_batches(platform, tmp_path):
    rng = np.random.default_rng(0)
    # 30 integer-coded classes, 10 rows each: classes (5+ rows per value on average)
    codes = pd.DataFrame({"x": rng.normal(size=300), "label": np.repeat(np.arange(30), 10)})
    codes.to_csv(tmp_path / "codes.csv", index=False)
    assert len(register(platform, "codes", str(tmp_path / "codes.csv"))["schema"]["classes"]) == 30
    # 15 distinct fractional values: at most 20 distinct values is never "continuous"
    few = pd.DataFrame({"x": rng.normal(size=60), "label": np.tile(np.arange(15) / 2, 4)})
    few.to_csv(tmp_path / "few.csv", index=False)
    assert register(platform, "few", str(tmp_path / "few.csv"))["rows"] == 60
    # 25 fractional values with many rows each: still a measurement, refused
    frac = pd.DataFrame({"x": rng.normal(size=500), "label": np.tile(np.arange(25) + 0.5, 20)})
    frac.to_csv(tmp_path / "frac.csv", index=False)
    with pytest.raises(InvalidInput, match=r"label column label looks continuous \(25 distinct"):
        register(platform, "frac", str(tmp_path / "frac.csv"))


def _reviews(rows: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = "the food was great slow service would come back never again cold tasty".split()
    return [" ".join(rng.choice(words, rng.integers(3, 6))) for _ in range(rows)]


def test_short_free_text_in_a_csv_is_read_as_text(tmp_path):
    # reviews of 3-5 words (under 30 characters on average): mostly unique, several words each
    df = pd.DataFrame({"stars": rng_ints(80), "review": _reviews(80),
                       "label": [("pos", "neg")[i % 2] for i in range(80)]})
    assert df["review"].str.len().mean() < 30
    df.to_csv(tmp_path / "reviews.csv", index=False)
    content = read_source(str(tmp_path / "reviews.csv"))
    assert content.kind == "text" and content.text_column == "review"
    assert read_source(str(tmp_path / "reviews.csv"), fmt="csv").kind == "tabular"  # a format given: a table


def test_two_free_text_columns_ask_which_one(live_server, tmp_path, monkeypatch):
    df = pd.DataFrame({"title": _reviews(60, 1), "review": _reviews(60, 2),
                       "label": [("pos", "neg")[i % 2] for i in range(60)]})
    df.to_csv(tmp_path / "reviews.csv", index=False)
    run = cli_runner(live_server, monkeypatch)
    out = run("datasets", "add", "reviews", str(tmp_path / "reviews.csv"))
    assert out.exit_code == 2, out.output
    assert out.stderr.strip().endswith("has 2 free-text columns (title, review): a text dataset reads one; "
                                       "pass --text COLUMN, or --format csv to keep it a table")
    out = run("datasets", "add", "reviews", str(tmp_path / "reviews.csv"), "--text", "review", "--json")
    assert out.exit_code == 0 and '"kind": "text"' in out.stdout
    out = run("datasets", "add", "table", str(tmp_path / "reviews.csv"), "--format", "csv", "--json")
    assert out.exit_code == 0 and '"kind": "tabular"' in out.stdout


def rng_ints(rows: int) -> list[int]:
    return list(np.random.default_rng(7).integers(1, 6, rows))


def test_a_zip_made_on_a_mac_passes_the_prediction_check(platform, tmp_path):
    """Finder's zips carry __MACOSX/._*.png AppleDouble files and .DS_Store: not images, skipped by the
    worker (formats.image_files), so the submission check must skip them too, not refuse the zip."""
    import io
    import json
    import zipfile

    from PIL import Image

    from loopml.training.predict_input import check_input

    platform.artifacts.put_bytes("models/m/1/loopml.json",
                                 json.dumps({"kind": "image", "features": {"shape": [8, 8, 1]}}).encode())
    png = io.BytesIO()
    Image.new("L", (8, 8)).save(png, format="PNG")
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as z:
        z.writestr("imgs/a.png", png.getvalue())
        z.writestr("__MACOSX/imgs/._a.png", b"\x00\x05\x16\x07 AppleDouble, not a PNG")
        z.writestr("imgs/.hidden.png", b"not a png either")
    platform.artifacts.put_bytes("uploads/imgs.zip", data.getvalue())
    mv = {"artifact_prefix": "models/m/1", "ref": "m:1", "kind": "image"}
    check_input(platform, mv, {"type": "upload", "key": "uploads/imgs.zip"})  # no InvalidInput

    with zipfile.ZipFile(data, "a") as z:  # a visible unreadable image is still refused
        z.writestr("imgs/b.png", b"broken")
    platform.artifacts.put_bytes("uploads/imgs.zip", data.getvalue())
    with pytest.raises(InvalidInput, match="'imgs/b.png' in 'imgs.zip' is not a readable image"):
        check_input(platform, mv, {"type": "upload", "key": "uploads/imgs.zip"})
