"""Paths on the control plane's own disk, once auth is on: a dataset source or an object trigger's
folder is read with the server's rights, so an editor naming /proc/self/environ, the server's
loopml.toml (the bootstrap token) or the metadata database must be refused (403 naming the rule);
the artifact store and LOOPML_SERVER_PATHS stay open to editors, anything stays open to an admin."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from loopml.api.app import create_app
from tests.surface_support import assert_error

BOOT = "bootstrap-secret"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def outside(tmp_path):
    """A CSV outside the artifact store, as a secret file of the server's would be."""
    folder = tmp_path / "server-files"
    folder.mkdir()
    (folder / "secret.csv").write_text("a,label\nsecret-one,1\nsecret-two,0\nsecret-three,1\n")
    return folder


def _app(settings, platform, **update):
    return create_app(settings.model_copy(update={"token": BOOT, **update}), platform=platform, start_loop=False)


def _editor(api: TestClient) -> str:
    made = api.post("/users", json={"name": "ed", "role": "editor"}, headers=bearer(BOOT))
    assert made.status_code == 201, made.text
    return made.json()["token"]


def test_an_editor_cannot_read_server_files_through_a_dataset_or_a_trigger(settings, platform, outside) -> None:
    with TestClient(_app(settings, platform), raise_server_exceptions=False) as api:
        ed = bearer(_editor(api))
        secret = outside / "secret.csv"
        for source in (str(secret), f"file://{secret}", "/proc/self/environ",
                       str(settings.home / "loopml.db"), f"{settings.resolved_artifact_uri}/../loopml.db"):
            assert_error(api.post("/datasets", json={"name": "leak", "source": source}, headers=ed),
                         403, "forbidden", "path on the server", "LOOPML_SERVER_PATHS", "role editor")
        assert_error(api.post("/triggers", json={"name": "peek", "kind": "objects", "objects_uri": str(outside),
                                                 "function": "f"}, headers=ed),
                     403, "forbidden", "objects_uri", "LOOPML_SERVER_PATHS", "key prefix")
        assert api.get("/datasets/leak", headers=ed).status_code == 404  # nothing was registered
        # inside the artifact store (where an object trigger's objects are): allowed
        inbox = settings.home / "artifacts" / "incoming"
        inbox.mkdir(parents=True)
        (inbox / "new.csv").write_text(secret.read_text())
        made = api.post("/datasets", json={"name": "ok", "source": str(inbox / "new.csv")}, headers=ed)
        assert made.status_code == 201, made.text
        # an admin (here the operator's bootstrap token) may name any path, as before
        admin = api.post("/datasets", json={"name": "ops", "source": str(secret)}, headers=bearer(BOOT))
        assert admin.status_code == 201, admin.text


def test_loopml_server_paths_opens_folders_to_editors(settings, platform, outside) -> None:
    with TestClient(_app(settings, platform, server_paths=f"{outside}, /nonexistent"),
                    raise_server_exceptions=False) as api:
        ed = bearer(_editor(api))
        made = api.post("/datasets", json={"name": "shared", "source": str(outside / "secret.csv")}, headers=ed)
        assert made.status_code == 201, made.text
        assert_error(api.post("/datasets", json={"name": "leak", "source": f"{outside}/../x.csv"}, headers=ed),
                     403, "forbidden")


def test_auth_off_reads_server_paths_as_before(settings, platform, outside) -> None:
    app = create_app(settings, platform=platform, start_loop=False)
    with TestClient(app, raise_server_exceptions=False) as api:
        made = api.post("/datasets", json={"name": "laptop", "source": str(outside / "secret.csv")})
        assert made.status_code == 201, made.text
