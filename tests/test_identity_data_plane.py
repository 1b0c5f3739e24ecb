"""The data plane accepts a LoopML API token holding endpoints:NAME:invoke wherever an endpoint key
or the serving token would do — for that endpoint only — checked against the real store."""

from __future__ import annotations

import asyncio
import functools

import httpx

from loopml.identity import service
from loopml.identity.principal import BOOTSTRAP
from loopml.serving.app import create_data_plane


def test_scoped_api_tokens_open_their_endpoints_invocation_routes_only(platform) -> None:
    service.create_user(platform, "app", "invoker", by=BOOTSTRAP)
    service.create_user(platform, "val", "viewer", by=BOOTSTRAP)
    app_user = service.resolve(platform, service.create_user(platform, "ops", "invoker", by=BOOTSTRAP)["token"])
    scoped = service.create_token(platform, by=BOOTSTRAP, user="app", scopes=["endpoints:mnist:invoke"])
    viewer = service.create_token(platform, by=BOOTSTRAP, user="val")["token"]
    revoked = service.create_token(platform, by=BOOTSTRAP, user="app", scopes=["endpoints:mnist:invoke"])
    assert app_user is not None and app_user.allows("endpoints:anything:invoke")
    plane = create_data_plane({}, token="dp-secret", token_check=functools.partial(service.may_invoke, platform))

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=plane), base_url="http://dp") as dp:
            def call(path: str, token: str | None, method: str = "POST"):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return dp.request(method, path, content=b"[]", headers=headers)
            # past auth, then "no such endpoint" (404): the token opened the door
            assert (await call("/endpoints/mnist/invocations", scoped["token"])).status_code == 404
            assert (await call("/v2/models/mnist", scoped["token"], "GET")).status_code == 404
            # another endpoint, a viewer's token, a bogus one, none: 401 as before
            assert (await call("/endpoints/other/invocations", scoped["token"])).status_code == 401
            assert (await call("/v2/models/other", scoped["token"], "GET")).status_code == 401
            assert (await call("/endpoints/mnist/invocations", viewer)).status_code == 401
            assert (await call("/endpoints/mnist/invocations", "lml_000000000000_" + "0" * 48)).status_code == 401
            assert (await call("/endpoints/mnist/invocations", None)).status_code == 401
            assert (await call("/metrics", scoped["token"], "GET")).status_code == 401  # not an invocation route
            assert (await call("/endpoints/mnist/invocations", "dp-secret")).status_code == 404  # unchanged
            # revocation: refused once the short cache entry is gone
            assert (await call("/endpoints/mnist/invocations", revoked["token"])).status_code == 404
            platform.identity.revoke_token(revoked["record"]["id"])
            plane._token_cache.clear()
            assert (await call("/endpoints/mnist/invocations", revoked["token"])).status_code == 401

    asyncio.run(run())
