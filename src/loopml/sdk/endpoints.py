"""SDK methods for real-time endpoints on the control plane: create, change, read, wait, delete.
(Invoking one talks to the data plane: ``loopml.sdk.invocations``.)"""

from __future__ import annotations

import time
from typing import Any, Callable

from loopml.core.errors import EndpointFailed, EndpointTimeout, LoopMLError
from loopml.sdk.http import Connection, segment


class _Keep:
    def __repr__(self) -> str:
        return "<unchanged>"


_KEEP: Any = _Keep()  # update_endpoint(shadow=...) left out: keep the shadow


def _endpoint_fields(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class EndpointsAPI(Connection):
    def create_endpoint(self, name: str, model: str | None = None,
                        variants: list[dict[str, Any]] | None = None, shadow: str | None = None,
                        capture_percent: float | None = None, max_batch_size: int | None = None,
                        max_batch_delay_ms: float | None = None, multi_model: bool | None = None,
                        wait: bool = False, timeout: float = 300,
                        new_key: bool = False, replicas: int | None = None,
                        replica_resources: dict[str, float] | None = None) -> dict[str, Any]:
        """Create a real-time endpoint serving ``model`` (and/or weighted ``variants``).

        Args:
            name: Endpoint name (letters, digits, hyphens; it becomes part of the URL).
            model: ``MODEL@ALIAS`` (follows the alias when it moves) or ``MODEL:VERSION``;
                shorthand for one variant named ``primary``.
            variants: Production variants ``[{"name", "ref", "weight"}]``; traffic share is
                weight / sum of weights.
            shadow: ``MODEL:VERSION`` or ``MODEL@ALIAS`` that gets a copy of the traffic (its
                answers are captured, never returned).
            capture_percent: Share of requests (0-100) whose input and output are captured.
            max_batch_size, max_batch_delay_ms: Adaptive batching (defaults 64 rows, 2 ms).
            multi_model: Allow ``target_model`` on invocations.
            replicas: Data-plane replicas kept on the Ray cluster (default 1; above 1 needs
                LOOPML_EXECUTOR=ray on the server).
            replica_resources: What each replica reserves on its node, e.g. ``{"cpus": 2,
                "memory_gb": 2}`` (default 1 CPU, 1 GB).
            new_key: Make an API key; the record's ``api_key`` shows it once (invoke with
                ``api_key=``).
            wait: Return only once the endpoint serves (``wait_endpoint``).
            timeout: Seconds ``wait`` may take.

        Returns:
            The endpoint record (``status``, ``ready``, ``generation``, ``url``…).

        Example::

            ep = c.create_endpoint("digits", model="digits-cnn@production", wait=True)
            print(c.invoke("digits", instances=images[:2]))
        """
        body: dict[str, Any] = {"name": name, **_endpoint_fields(
            model=model, variants=variants, capture_percent=capture_percent,
            max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms,
            multi_model=multi_model, replicas=replicas, replica_resources=replica_resources)}
        if shadow is not None:
            body["shadow"] = shadow
        if new_key:
            body["new_key"] = True
        record = self._json("POST", "/endpoints", json=body)
        return self._settled(name, record, wait, timeout)

    def _settled(self, name: str, record: dict[str, Any], wait: bool,
                 timeout: float) -> dict[str, Any]:
        if not wait:
            return record
        try:
            ready = self.wait_endpoint(name, timeout=timeout)
        except LoopMLError as exc:
            exc.api_key = record.get("api_key")  # made and shown once: never lose it
            raise
        if record.get("api_key"):
            ready["api_key"] = record["api_key"]  # shown once: keep it in what we return
        return ready

    def update_endpoint(self, name: str, model: str | None = None,
                        variants: list[dict[str, Any]] | None = None, shadow: Any = _KEEP,
                        capture_percent: float | None = None, max_batch_size: int | None = None,
                        max_batch_delay_ms: float | None = None, multi_model: bool | None = None,
                        wait: bool = False, timeout: float = 300, new_key: bool = False,
                        clear_keys: bool = False, replicas: int | None = None,
                        replica_resources: dict[str, float] | None = None) -> dict[str, Any]:
        """Change an endpoint: only the arguments given change (a new ``generation``).

        ``model`` replaces the variants by one ``primary``; ``variants`` replaces them all.
        ``shadow=None`` removes the shadow; leaving ``shadow`` out keeps it. The old versions
        keep answering until the new ones are loaded (no failed requests on a switch).

        Returns:
            The endpoint record (once it serves the new generation with ``wait=True``).

        Example::

            c.update_endpoint("digits", variants=[
                {"name": "primary", "ref": "digits-cnn:3", "weight": 90},
                {"name": "canary", "ref": "digits-cnn:4", "weight": 10}], wait=True)
        """
        body = _endpoint_fields(model=model, variants=variants, capture_percent=capture_percent,
                                max_batch_size=max_batch_size,
                                max_batch_delay_ms=max_batch_delay_ms, multi_model=multi_model,
                                replicas=replicas, replica_resources=replica_resources)
        if shadow is not _KEEP:
            body["shadow"] = shadow
        if new_key:
            body["new_key"] = True
        if clear_keys:
            body["clear_keys"] = True
        record = self._json("PATCH", f"/endpoints/{segment(name)}", json=body)
        return self._settled(name, record, wait, timeout)

    def endpoints(self) -> list[dict[str, Any]]:
        """All endpoints, by name, with their status.

        Example::

            {e["name"]: e["status"] for e in c.endpoints()}
        """
        return self._json("GET", "/endpoints")

    def endpoint(self, name: str) -> dict[str, Any]:
        """One endpoint record: ``spec`` (as written), ``resolved`` (the versions to serve),
        ``status`` (Creating | Updating | InService | Failed), ``message``, ``ready``, ``url``.

        Example::

            c.endpoint("digits")["ready"]
        """
        return self._json("GET", f"/endpoints/{segment(name)}")

    def serving_nodes(self, endpoint: str | None = None, include_gone: bool = False) -> list[dict[str, Any]]:
        """The data-plane nodes (``loopml serve`` and the control plane's own): ``address``,
        ``state``, ``lost`` (no heartbeat lately), ``heartbeat_age_s``, ``endpoints_loaded``,
        ``load``. ``endpoint``: only those serving it.

        Example::

            [n["address"] for n in c.serving_nodes("digits") if n["state"] == "ready" and not n["lost"]]
        """
        params: dict[str, Any] = {"all": "true"} if include_gone else {}
        if endpoint is not None:
            params["endpoint"] = endpoint
        return self._json("GET", "/nodes", params=params)

    def delete_endpoint(self, name: str, force: bool = False) -> dict[str, Any]:
        """Delete an endpoint (the serving process stops serving it). Refused (Conflict) while
        monitors watch it or workflows deploy to it, unless ``force``.

        Returns:
            ``{"deleted": name, "broken": [dependents]}``

        Example::

            c.delete_endpoint("digits")
        """
        return self._json("DELETE", f"/endpoints/{segment(name)}", params={"force": "true"} if force else None)

    def wait_endpoint(self, name: str, timeout: float = 300, poll: float = 0.25,
                      on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the endpoint serves its current generation (``ready``).

        Args:
            timeout: Give up after this many seconds (``EndpointTimeout``).
            poll: Seconds between polls.
            on_poll: Called with every record read (progress display).

        Returns:
            The ready record.

        Raises:
            EndpointFailed: the serving process could not load the current generation (the
                record's message says why; the record is on ``.record``).
            EndpointTimeout: not ready within ``timeout``.

        Example::

            c.wait_endpoint("digits", timeout=120)
        """
        deadline = time.monotonic() + timeout
        while True:
            record = self.endpoint(name)
            if on_poll is not None:
                on_poll(record)
            if record.get("ready"):
                return record
            if record.get("status") == "Failed":
                raise EndpointFailed(f"endpoint {name!r} failed (generation "
                                     f"{record.get('generation')}): "
                                     f"{record.get('message') or 'no reason given'}", record)
            if time.monotonic() >= deadline:
                why = f": {record['message']}" if record.get("message") else ""
                raise EndpointTimeout(f"endpoint {name!r} is still {record.get('status')} after "
                                      f"{timeout:g}s{why}", record)
            time.sleep(poll)

    # -- autoscaling -------------------------------------------------------------------------
    def set_autoscaling(self, name: str, min_replicas: int | None = None, max_replicas: int | None = None,
                        target_queue: float | None = None, target_rps: float | None = None,
                        scale_out_cooldown_s: float | None = None,
                        scale_in_cooldown_s: float | None = None) -> dict[str, Any]:
        """Autoscale an endpoint's replicas between ``min_replicas`` and ``max_replicas``, tracking
        ``target_queue`` (requests in flight or queued per replica) or ``target_rps`` (requests/s
        per replica). Scale-out at most once per ``scale_out_cooldown_s`` (default 60); scale-in
        one replica at a time after ``scale_in_cooldown_s`` of low load (default 300). On a
        change, absent arguments keep their value.

        Returns:
            The policy, ``desired_replicas``, ``last_evaluation`` and ``decisions``.

        Example::

            c.set_autoscaling("digits", min_replicas=1, max_replicas=4, target_queue=8)
        """
        body = _endpoint_fields(min_replicas=min_replicas, max_replicas=max_replicas, target_queue=target_queue,
                                target_rps=target_rps, scale_out_cooldown_s=scale_out_cooldown_s,
                                scale_in_cooldown_s=scale_in_cooldown_s)
        return self._json("PUT", f"/endpoints/{segment(name)}/autoscaling", json=body)

    def autoscaling(self, name: str, limit: int = 20) -> dict[str, Any]:
        """The autoscaling policy (``enabled``), ``desired_replicas``, the last evaluation and the
        newest ``limit`` decisions (time, from → to, the metric's value, the reason).

        Example::

            [(d["at"], d["from_replicas"], d["to_replicas"]) for d in c.autoscaling("digits")["decisions"]]
        """
        return self._json("GET", f"/endpoints/{segment(name)}/autoscaling", params={"limit": limit})

    def remove_autoscaling(self, name: str) -> dict[str, Any]:
        """Turn autoscaling off (the replica count is the endpoint's own again; decisions stay).

        Example::

            c.remove_autoscaling("digits")
        """
        return self._json("DELETE", f"/endpoints/{segment(name)}/autoscaling")
