"""The SDK's HTTP core: one connection to the control plane (transport, auth, error decoding)
that every noun module (datasets, jobs, models, endpoints, …) builds its methods on.

Only httpx and ``loopml.core`` are imported: no store, no Keras, no numpy.
"""

from __future__ import annotations

from typing import Any, Self
from urllib.parse import quote

import httpx

from loopml import __version__
from loopml.core.errors import InvalidInput, LoopMLError, error_from_dict


def load_settings(**overrides: Any):
    """core.settings.load_settings, imported when first needed (pydantic-settings is not light)."""
    from loopml.core.settings import load_settings as load

    return load(**overrides)


def _login_token(url: str) -> str | None:
    """The token ``loopml login`` saved, only for the server it was saved for (LOOPML_TOKEN wins)."""
    from loopml.core.settings import load_login

    login = load_login()
    return login["token"] if login and login["api_url"] == url.rstrip("/") else None


def segment(value: Any) -> str:
    """One URL path segment: '/', '?', '#' and spaces cannot leak into the route."""
    text = str(value)
    if not text:
        raise InvalidInput("an empty name was given")
    return quote(text, safe="")


def decode_error(resp: httpx.Response) -> LoopMLError:
    """The control plane's error body rebuilt as the typed error the server raised."""
    if resp.headers.get("x-loopml-plane") == "data":  # serving.app marks its errors
        url = resp.request.url
        return InvalidInput(f"{url.scheme}://{url.netloc.decode()} is LoopML's data plane "
                            "(real-time endpoints), not the control plane; set LOOPML_API_URL "
                            "to the control plane's address (LOOPML_PORT, default "
                            f"http://{url.host}:8080)")
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "code" in body and "message" in body:
        return error_from_dict(body, resp.status_code)
    text = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else resp.reason_phrase
    return LoopMLError(f"{resp.request.method} {resp.request.url.path} failed: HTTP {resp.status_code} {text}")


class Connection:
    """A connection to one LoopML control plane (see ``loopml.sdk.client.Client``)."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30) -> None:
        if url is None or token is None:
            settings = load_settings()
            url = url or settings.resolved_api_url
            token = token if token is not None else settings.token or _login_token(url)
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": f"loopml-sdk/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise InvalidInput(f"API URL {self.url!r} is not valid: {exc}") from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        try:
            request = self._http.build_request(method, path, **kwargs)
            resp = self._http.send(request, stream=stream)
        except httpx.ConnectError:
            raise LoopMLError(f"the LoopML control plane is not reachable at {self.url}: "
                              "start it with `loopml server` (or set LOOPML_API_URL)") from None
        except httpx.TimeoutException:
            raise LoopMLError(f"the control plane at {self.url} did not answer {method} {path} in time") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise InvalidInput(f"API URL {self.url!r} is not valid: {exc}") from None
        except httpx.TransportError as exc:
            raise LoopMLError(f"talking to the control plane at {self.url} failed: {exc}") from None
        if resp.status_code >= 400:
            if stream:
                resp.read()
                resp.close()
            raise decode_error(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _upload_timeout(self) -> httpx.Timeout:
        # the server reads, hashes and stores the whole upload before it answers
        return httpx.Timeout(self.timeout, read=max(self.timeout, 3600.0), write=max(self.timeout, 3600.0))
