"""``loopml nodes haproxy``: an HAProxy configuration whose servers are the live data-plane nodes.

deploy/haproxy.cfg is this template with two example servers (tests/test_serving_nodes.py checks
they stay the same). Regenerate and reload when nodes come and go (Ray replicas move to new
ports): ``loopml nodes haproxy > haproxy.cfg && systemctl reload haproxy`` — HAProxy's own
``/readyz`` checks still decide which of the listed nodes get traffic.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

TEMPLATE = """# HAProxy in front of LoopML data-plane nodes (`loopml serve`), README "Production".
# Clients (boto3 SageMaker runtime, tritonclient, curl) talk to :8081 here; every node serves
# every endpoint, so any node can take any request. Health: GET /readyz is 200 once the node has
# loaded every endpoint (503 while loading), so a starting node gets no traffic.
# tests/test_serving_nodes.py runs this very file (bind and server lines swapped for its ports).

global
    maxconn 4096  # raise with the open-files limit (HAProxy needs about 2 fds per connection)
    log stdout format raw local0 warning

defaults
    mode http
    log global
    option http-keep-alive
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 30s
    # A node killed mid-request: the request goes to another node instead of failing the client.
    # conn-failure/empty-response: the node died before answering (kill -9, machine lost);
    # 503: a node draining or still loading. Buffering the body (up to tune.bufsize, 16 kB by
    # default; raise it for bigger payloads) is what lets HAProxy resend a POST.
    option http-buffer-request
    retries 3
    retry-on conn-failure empty-response 503
    option redispatch 1

frontend loopml_data_plane
    bind {bind}
    default_backend loopml_nodes

backend loopml_nodes
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    # a dead node is out after 2 failed checks 0.5 s apart; back after 1 good one
    default-server inter 500ms fastinter 250ms fall 2 rise 1 maxconn 256
"""


def render(servers: Iterable[tuple[str, str]], bind: str = ":8081") -> str:
    """The configuration with ``(name, host:port)`` servers."""
    lines = "".join(f"    server {name} {address} check\n" for name, address in servers)
    return TEMPLATE.replace("{bind}", bind) + lines


def live_servers(nodes: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """(name, host:port) of nodes that are up (not lost, gone or draining), one per address
    (the serving workers of one control plane share theirs)."""
    out: dict[str, str] = {}
    for node in nodes:
        if node.get("lost") or node.get("state") not in ("ready", "starting"):
            continue
        address = re.sub(r"^https?://", "", node["address"]).rstrip("/")
        out.setdefault(address, re.sub(r"[^A-Za-z0-9_.:-]", "_", node["id"]))
    return [(name, address) for address, name in sorted(out.items())]
