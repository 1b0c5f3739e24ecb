"""SDK invocations of real-time endpoints: requests to the data plane (SageMaker-style
``invocations``), not to the control plane: its own address, token and error protocol."""

from __future__ import annotations

import json
from typing import Any

import httpx

from loopml.core.errors import InvalidInput, InvocationError, LoopMLError, NotFound, UnsupportedFormat
from loopml.sdk.endpoints import EndpointsAPI
from loopml.sdk.http import load_settings


class InvocationsAPI(EndpointsAPI):
    """The data plane's address comes from the endpoint record (hence EndpointsAPI)."""

    def invoke(self, name: str, instances: Any = None, body: Any = None,
               content_type: str = "application/json", variant: str | None = None,
               target_model: str | None = None, inference_id: str | None = None,
               api_key: str | None = None) -> Any:
        """Predict with a real-time endpoint (the data plane's ``invocations``, SageMaker-style).

        Args:
            instances: Rows as JSON-able values (images as nested lists, texts as strings,
                records as dicts); sent as ``{"instances": [...]}``.
            body: Instead of ``instances``: raw ``bytes``/``str`` sent as-is with
                ``content_type`` (``application/x-npy``, ``text/csv``, ``text/plain``), or any
                JSON-able value.
            variant: Send to this production variant (else weighted random).
            target_model: ``MODEL:VERSION`` on a multi-model endpoint.
            inference_id: Recorded with captured traffic.
            api_key: The endpoint's API key, when it has keys (else LOOPML_SERVING_TOKEN, when set).

        Returns:
            The parsed JSON answer: ``{"predictions": [{"label", "confidence", "probabilities"}]}``.

        Raises:
            InvalidInput (HTTP 400), NotFound (404), UnsupportedFormat (415), else
            InvocationError with the data plane's message, ``.code`` (its x-amzn-ErrorType)
            and ``.status``.

        Example::

            out = c.invoke("digits", instances=images[:4].tolist())
            [p["label"] for p in out["predictions"]]
        """
        return self._invocation(name, instances=instances, body=body, content_type=content_type,
                                variant=variant, target_model=target_model,
                                inference_id=inference_id, api_key=api_key).json()

    def _invocation(self, name: str, *, instances: Any = None, body: Any = None,
                    content_type: str = "application/json", variant: str | None = None,
                    target_model: str | None = None,
                    inference_id: str | None = None,
                    api_key: str | None = None) -> httpx.Response:
        """The data plane's raw 200 response (the CLI also reads its variant header)."""
        if (instances is None) == (body is None):
            raise InvalidInput("give either instances or body")
        if instances is not None:
            content, content_type = json.dumps({"instances": instances}).encode(), "application/json"
        elif isinstance(body, (bytes, bytearray, memoryview)):
            content = bytes(body)
        elif isinstance(body, str):
            content = body.encode("utf-8")
        else:
            content = json.dumps(body).encode()
        headers = {"Content-Type": content_type}
        for header, value in (("X-Amzn-SageMaker-Target-Variant", variant),
                              ("X-Amzn-SageMaker-Target-Model", target_model),
                              ("X-Amzn-SageMaker-Inference-Id", inference_id)):
            if value:
                headers[header] = value
        for attempt in (0, 1):
            url = self._invocation_url(name, fresh=attempt > 0)
            request = self._http.build_request("POST", url, content=content, headers=headers)
            # the control plane's token is not the data plane's: send LOOPML_SERVING_TOKEN only
            request.headers.pop("Authorization", None)
            serving_token = api_key or self._serving_token()
            if serving_token:
                request.headers["Authorization"] = f"Bearer {serving_token}"
            try:
                resp = self._http.send(request)
            except httpx.ConnectError:
                if attempt == 0:
                    continue  # the data plane may have moved (control plane restarted): ask again
                raise LoopMLError(f"the data plane of endpoint {name!r} is not reachable at "
                                  f"{url}") from None
            except httpx.TimeoutException:
                raise LoopMLError(f"endpoint {name!r} did not answer in {self.timeout:g}s") from None
            except httpx.TransportError as exc:
                raise LoopMLError(f"invoking endpoint {name!r} at {url} failed: {exc}") from None
            if resp.status_code == 401:
                raise self._unauthorised(name, resp, api_key=api_key)
            if resp.status_code >= 400:
                raise _invocation_error(name, resp)
            return resp
        raise AssertionError("unreachable")

    def _unauthorised(self, name: str, resp: httpx.Response, *, api_key: str | None) -> LoopMLError:
        """A 401 says what to send: the endpoint's key (it has keys) or the data plane's token."""
        try:
            keyed = bool((self.endpoint(name).get("spec") or {}).get("key_hashes"))
        except LoopMLError:
            keyed = False
        if keyed and api_key:
            message, field = f"endpoint {name!r} refused the API key given: it is not one of its keys", None
        elif keyed:
            message, field = f"endpoint {name!r} needs one of its API keys: pass api_key=KEY", "api_key"
        elif api_key:
            message, field = (f"endpoint {name!r} has no API keys: the data plane wants its own token "
                              "(set LOOPML_SERVING_TOKEN)"), None
        elif self._serving_token():
            message, field = "LOOPML_SERVING_TOKEN does not match the data plane's token", None
        else:
            message, field = "the data plane needs its token: set LOOPML_SERVING_TOKEN", None
        return InvocationError(message, code=resp.headers.get("x-amzn-errortype") or None,
                               status=resp.status_code, retry_after=_retry_after(resp),
                               **({"field": field} if field else {}))

    def _invocation_url(self, name: str, *, fresh: bool = False) -> str:
        cache: dict[str, str] = self.__dict__.setdefault("_endpoint_urls", {})
        if fresh or name not in cache:
            url = self.endpoint(name).get("url")
            if not url:
                raise LoopMLError(f"endpoint {name!r} has no data-plane address: the control plane "
                                  f"at {self.url} runs no data plane (started without its control loop?)")
            cache[name] = _reachable(url, self.url)
        return cache[name]

    def _serving_token(self) -> str | None:
        if "_serving_token_value" not in self.__dict__:
            self.__dict__["_serving_token_value"] = load_settings().serving_token
        return self.__dict__["_serving_token_value"]


def _reachable(url: str, api_url: str) -> str:
    """The control plane names the data plane as it sees it (127.0.0.1 when bound locally or to
    every interface); a client on another machine reaches it at the API's host instead."""
    from urllib.parse import urlsplit, urlunsplit

    loopback = ("127.0.0.1", "localhost", "::1")
    dp, api = urlsplit(url), urlsplit(api_url)
    if dp.hostname in loopback and api.hostname and api.hostname not in loopback:
        host = f"[{api.hostname}]" if ":" in api.hostname else api.hostname
        return urlunsplit(dp._replace(netloc=f"{host}:{dp.port}" if dp.port else host))
    return url


def _retry_after(resp: httpx.Response) -> float | None:
    retry = resp.headers.get("retry-after")
    try:
        return float(retry) if retry else None
    except ValueError:
        return None


def _invocation_error(name: str, resp: httpx.Response) -> LoopMLError:
    """The data plane's error (SageMaker's protocol: ``x-amzn-ErrorType`` + a message) as the
    core error it stands for, else an InvocationError carrying that error type."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    message = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("Message") or body.get("error")
    if not message:
        text = resp.text.strip()
        message = text.splitlines()[0][:200] if text else f"HTTP {resp.status_code} {resp.reason_phrase}"
    message = str(message)
    if resp.status_code == 400:
        return InvalidInput(message)
    if resp.status_code == 404:
        return NotFound(message)
    if resp.status_code == 415:
        return UnsupportedFormat(message)
    return InvocationError(f"endpoint {name!r}: {message}", code=resp.headers.get("x-amzn-errortype") or None,
                           status=resp.status_code, retry_after=_retry_after(resp))
