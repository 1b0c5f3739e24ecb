"""Errors and names, one place each: every exception a user can meet is a ``core.errors`` class
the SDK rebuilds from the server's answer, and every name rule is one validator in ``core.names``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from loopml.core import errors, names
from loopml.core.errors import (ERRORS_BY_CODE, InvalidInput, LoopMLError, NotFound, Unauthorized,
                                error_from_dict)

SRC = Path(__file__).resolve().parent.parent / "src" / "loopml"


def test_every_error_code_comes_back_as_its_class():
    for code, cls in ERRORS_BY_CODE.items():
        sent = cls("boom", field="x")
        back = error_from_dict(sent.to_dict(), sent.status)
        assert type(back) is cls, code
        assert (back.code, back.status, back.exit_code, back.message, back.details) == \
               (code, sent.status, sent.exit_code, "boom", {"field": "x"})


def test_a_code_without_a_class_keeps_the_servers_code_and_status():
    err = error_from_dict({"code": "method_not_allowed", "message": "no"}, 405)
    assert type(err) is LoopMLError and (err.code, err.status, err.exit_code) == ("method_not_allowed", 405, 1)
    assert (LoopMLError.code, LoopMLError.status) == ("error", 500)  # set on the instance only


def test_the_sdk_raises_the_servers_typed_errors(settings):
    from loopml.api.app import create_app
    from loopml.sdk.client import Client
    from tests.asgi_server import serve_asgi

    settings = settings.model_copy(update={"token": "s3cret"})  # settings are frozen
    with serve_asgi(create_app(settings, start_loop=False)) as url:
        with Client(url, token="") as anonymous, pytest.raises(Unauthorized, match="missing API token") as refused:
            anonymous.list_datasets()
        assert (refused.value.code, refused.value.status, refused.value.exit_code) == ("unauthorized", 401, 2)
        with Client(url, token="s3cret") as c:
            with pytest.raises(NotFound, match="ghost"):
                c.dataset("ghost")
            with pytest.raises(InvalidInput) as bad_name:
                c.add_dataset("Bad Name", "sample:iris")
            assert bad_name.value.message == ("dataset name 'Bad Name' is not valid: use lowercase letters, "
                                              "digits, '.', '_' or '-'")
            with pytest.raises(LoopMLError) as not_allowed:
                c._json("DELETE", "/health")
            assert (type(not_allowed.value), not_allowed.value.code, not_allowed.value.status) == \
                   (LoopMLError, "method_not_allowed", 405)


def _python_files(*folders: str):
    for folder in folders:
        yield from sorted((SRC / folder).rglob("*.py"))


def test_the_store_and_the_sdk_raise_only_core_errors():
    """No RuntimeError for a user anywhere; no exception classes of their own in store/ or sdk/."""
    found = []
    for path in _python_files("."):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) \
                    and getattr(node.exc.func, "id", None) == "RuntimeError":
                found.append(f"{path.relative_to(SRC)}:{node.lineno} raises RuntimeError")
    for path in _python_files("store", "sdk"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", "").endswith(("Error", "Exception")) for base in node.bases):
                found.append(f"{path.relative_to(SRC)}:{node.lineno} defines {node.name}")
    assert not found, found
    assert all(issubclass(cls, LoopMLError) for cls in vars(errors).values()
               if isinstance(cls, type) and issubclass(cls, Exception))


@pytest.mark.parametrize("check, good, bad, message", [
    (names.dataset_name, "mnist-v1.2_x", "MNIST",
     "dataset name 'MNIST' is not valid: use lowercase letters, digits, '.', '_' or '-'"),
    (names.model_name, "mnist-cnn", "mnist cnn",
     "model name 'mnist cnn' is not valid: use lowercase letters, digits, '.', '_' or '-'"),
    (names.endpoint_name, "Digits-2", "digits-",
     "endpoint name 'digits-' is invalid: letters, digits and hyphens, starting and ending with a letter "
     "or digit, at most 63 characters"),
    (names.function_name, "resize-2", "Resize",
     "function name 'Resize' is not valid: use lowercase letters, digits and '-' (starting with a letter "
     "or digit, at most 63 characters)"),
    (names.workflow_name, "Nightly_2", "_nightly",
     "workflow name '_nightly' is not valid: use letters, digits, '-' and '_' (at most 63 characters, "
     "starting with a letter or digit)"),
    (names.execution_name, "run.2", "r" * 81,
     f"execution name {'r' * 81!r} is not valid: letters, digits, '.', '-' and '_' (at most 80 characters)"),
    (names.trigger_name, "new_images-2", "new images",
     "name: 'new images' must be 1-63 letters, digits, '-' or '_' (starting with a letter or digit)"),
    (names.monitor_name, "drift_2", "drift!",
     "name: 'drift!' must be 1-63 letters, digits, '-' or '_' (starting with a letter or digit)"),
])
def test_each_kind_of_name_has_one_rule(check, good, bad, message):
    assert check(good) == good
    with pytest.raises(InvalidInput) as refused:
        check(bad)
    assert refused.value.message == message
    for wrong in (good + "\n", None, 7):  # a trailing newline is no part of a name
        with pytest.raises(InvalidInput):
            check(wrong)


def test_name_rules_are_written_once():
    """Name patterns are compiled in core/names.py only; the SDK quotes path segments in one place."""
    found = [f"{path.relative_to(SRC)}" for path in _python_files(".")
             if path != SRC / "core" / "names.py" and "NAME_RE = re.compile" in path.read_text()]
    found += [f"{path.relative_to(SRC)} quotes URLs" for path in _python_files("sdk")
              if path.name != "http.py" and "quote(" in path.read_text()]
    assert not found, found
