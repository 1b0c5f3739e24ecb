"""Python client for the LoopML control plane (what the CLI uses, too).

``Client`` gathers one module per noun (datasets, jobs, models, endpoints, invocations,
functions, triggers, workflows, monitors, tuning), each built on the HTTP core in ``sdk.http``. Only
httpx and ``loopml.core`` are imported: no store, no Keras, no numpy, so
``from loopml import Client`` stays light enough for notebooks and scripts.

Example::

    from loopml import Client

    c = Client()                                   # LOOPML_API_URL / LOOPML_TOKEN, else localhost:8080
    c.add_dataset("mnist", "sample:mnist")
    job = c.wait(c.train("mnist", model="cnn", params={"epochs": 2})["id"])
    print(job["status"], job["result"]["model"])
"""

from __future__ import annotations

from typing import Any

# the SDK's own errors live in the one hierarchy; importable from here as they always were
from loopml.core.errors import EndpointFailed, EndpointTimeout, InvocationError
from loopml.sdk.datasets import DatasetsAPI
from loopml.sdk.functions import FunctionsAPI
from loopml.sdk.identity import IdentityAPI
from loopml.sdk.invocations import InvocationsAPI
from loopml.sdk.models import ModelsAPI
from loopml.sdk.monitors import MonitorsAPI
from loopml.sdk.triggers import TriggersAPI
from loopml.sdk.tuning import TuningAPI
from loopml.sdk.workflows import WorkflowsAPI

__all__ = ["Client", "EndpointFailed", "EndpointTimeout", "InvocationError"]


class Client(DatasetsAPI, ModelsAPI, InvocationsAPI, FunctionsAPI, TriggersAPI, WorkflowsAPI, MonitorsAPI,
             TuningAPI, IdentityAPI):
    """A connection to one LoopML control plane.

    Args:
        url: Base URL of the API; default ``Settings().resolved_api_url`` (``LOOPML_API_URL``,
            else ``http://127.0.0.1:8080``).
        token: Bearer token; default ``LOOPML_TOKEN``, else the one ``loopml login`` saved for this URL.
        timeout: Seconds to wait for an ordinary request (registering a dataset may take longer).

    Every failure raises a ``loopml.core.errors.LoopMLError`` subclass (``NotFound``,
    ``InvalidInput``, ``Conflict``, …) carrying the server's message.

    Example::

        with Client("http://ml-box:8080", token="s3cret") as c:
            print(c.health())
    """

    def health(self) -> dict[str, Any]:
        """Check the control plane is up.

        Returns:
            ``{"status": "ok", "version": "...", "data_plane": "http://127.0.0.1:8081"}``
            (``data_plane``: where endpoints answer; absent when the server runs no control loop)

        Example::

            Client().health()["status"]  # "ok"
        """
        return self._json("GET", "/health")
