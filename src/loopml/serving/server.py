"""The serving process: ``python -m loopml.serving.server --fd N`` (started by the control plane).

It serves every endpoint on the listening socket it inherits (so restarts never drop the
port; with LOOPML_SERVING_WORKERS > 1 several of these processes accept on the same socket and
merge their metrics through ``--metrics-dir``), keeps its endpoints in step with the metadata store (serving.manager), captures
traffic to the artifact store (serving.capture) and exits when its parent control plane is
gone. SIGTERM/SIGINT: uvicorn stops accepting, finishes in-flight requests, then the
batchers drain and the capture writer flushes — nothing answered goes uncaptured. SIGKILL: every
answered request's record is already in the capture spool ({home}/spool/capture), which the
next serving process uploads at start.

Settings come from LOOPML_* variables (the control plane passes its own).

``--node`` (``loopml serve``): a standalone data-plane node — it binds ``--host``/``--port``
itself, follows no parent (it keeps serving while every control plane is down: desired state is
read from the metadata store, models from the artifact store), leaves the endpoint rows to the
control plane, and names its capture files after its node id. Its first SIGTERM drains first:
/readyz and /ping answer 503 "draining" (and the node reports ``draining``) for
LOOPML_SERVING_DRAIN_S (2 s) while it keeps serving, so the load balancer takes it out before it
stops accepting; a second signal ends the wait. Every serving process reports
itself in ``serving_nodes`` (serving/node.py): kind ``node`` with ``--node``, else ``embedded``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import socket
import sys

from loopml.core.settings import load_settings

log = logging.getLogger("loopml.serving.server")

GRACEFUL_S = 10  # in-flight requests get this long on SIGTERM (the supervisor waits longer)
DEFAULT_NODE_DRAIN_S = 2.0  # > deploy/haproxy.cfg's detection (2 failed checks 0.5 s apart)


def _start_drain(app, reporter) -> None:
    app.draining = True  # /readyz and /ping: 503 "draining"; requests are still answered
    if reporter is not None:
        reporter.draining = True
        asyncio.get_running_loop().create_task(reporter.report_once())  # shown draining at once


def _draining_server(config, drain_s: float, on_drain):
    """uvicorn's Server whose first SIGTERM/SIGINT drains first: ``on_drain`` makes the node fail
    its readiness check, it keeps serving ``drain_s`` seconds (the load balancer takes it out),
    then shuts down as usual (stops accepting, finishes in-flight requests). A second signal
    ends the wait at once."""
    import uvicorn

    loop = asyncio.get_running_loop()

    class Server(uvicorn.Server):
        timer: asyncio.TimerHandle | None = None
        draining = False

        def handle_exit(self, sig, frame) -> None:  # a signal handler: hand over to the loop
            if drain_s <= 0 or self.draining or self.should_exit:
                if self.timer is not None:
                    loop.call_soon_threadsafe(self.timer.cancel)
                super().handle_exit(sig, frame)
                return
            self.draining = True
            loop.call_soon_threadsafe(self._begin_drain, sig, frame)

        def _begin_drain(self, sig, frame) -> None:
            on_drain()
            self.timer = loop.call_later(drain_s, uvicorn.Server.handle_exit, self, sig, frame)

    return Server(config)


async def _until_ready(manager, stop: asyncio.Event, limit_s: float) -> None:
    """Hold off accepting until every endpoint is loaded (the other workers answer meanwhile; the
    kernel gives this process no connection before it accepts). Bounded: an endpoint that never
    loads must not keep a worker out for good."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while not stop.is_set() and not manager.ready() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loopml.serving.server")
    p.add_argument("--fd", type=int, help="listening socket inherited from the control plane")
    p.add_argument("--host", default=None, help="bind here instead of --fd (standalone use)")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--parent-pid", type=int, default=None)
    p.add_argument("--metrics-dir", default=None,
                   help="one of several workers: /metrics merges the workers' files here")
    p.add_argument("--accept-when-ready", type=float, default=0.0, metavar="SECONDS",
                   help="a replacement worker beside live ones: load every endpoint (up to SECONDS) "
                        "before accepting on the shared socket, so no caller meets it loading")
    p.add_argument("--node", action="store_true", help="standalone data-plane node (loopml serve)")
    p.add_argument("--replica-of", default=None, metavar="ENDPOINT",
                   help="a replica of ENDPOINT placed on a Ray cluster (jobs/ray_replicas.py): a standalone "
                        "node reporting as kind 'replica' of that endpoint")
    p.add_argument("--advertise", default=None, help="address registered for this node "
                   "(default http://HOST:PORT as bound)")
    p.add_argument("--endpoints", default=None, metavar="NAME[,NAME]",
                   help="serve only these endpoints (default: every endpoint)")
    args = p.parse_args(argv)
    args.node = args.node or args.replica_of is not None  # a replica is a standalone node
    return args


async def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from loopml.identity.service import may_invoke
    from loopml.platform import Platform
    from loopml.serving.app import create_data_plane
    from loopml.serving.capture import CaptureWriter
    from loopml.serving.manager import EndpointManager
    from loopml.serving.metrics import ServingMetrics, SharedMetrics
    from loopml.serving.model_cache import ModelCache
    from loopml.serving.node import NodeReporter, advertised_address, new_node_id
    from loopml.serving.read_timeout import read_timeout_protocol
    from loopml import __version__

    settings = load_settings()
    platform = Platform(settings, create_schema=False)
    cache = ModelCache(platform.artifacts, settings.home / "cache" / "models",
                       memory_mb=settings.serving_memory_mb)
    # write-ahead spool: a kill -9 loses no answered record; the next process uploads what is left
    node_id = new_node_id()
    capture = CaptureWriter(platform.artifacts, settings.capture_prefix,
                            spool_dir=settings.home / "spool" / "capture",
                            node_tag=node_id if args.node else "")
    shared = SharedMetrics(args.metrics_dir) if args.metrics_dir else None
    metrics = ServingMetrics(shared)
    manager = EndpointManager(platform, cache, parent_pid=args.parent_pid,
                              on_removed=metrics.remove_endpoint, standalone=args.node,
                              only=frozenset(args.endpoints.split(",")) if args.endpoints else None)
    stop = asyncio.Event()
    reporter: NodeReporter | None = None

    async def on_shutdown() -> None:
        stop.set()
        if reporter is not None:
            await reporter.gone()
        await manager.close()  # batchers drain: every accepted request is answered
        await asyncio.to_thread(capture.close)  # ... and captured

    app = create_data_plane(manager, token=settings.serving_token, metrics=metrics,
                            capture=capture, on_shutdown=on_shutdown,
                            token_check=functools.partial(may_invoke, platform))
    # measured on the hot path: no proxy-header middleware, no per-response date/server headers;
    # slow clients: a request's headers and body have http_read_timeout_s to arrive (408)
    config = uvicorn.Config(app, loop="none", http=read_timeout_protocol(settings.http_read_timeout_s),
                            lifespan="on",
                            proxy_headers=False, server_header=False, date_header=False,
                            log_level=settings.log_level.lower(), access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_S)
    drain_s = settings.serving_drain_s if settings.serving_drain_s is not None else \
        (DEFAULT_NODE_DRAIN_S if args.node else 0.0)  # the embedded one's socket outlives it
    server = _draining_server(config, drain_s, on_drain=lambda: _start_drain(app, reporter))
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        family = socket.AF_INET6 if ":" in (args.host or "") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host or settings.serving_host, args.port if args.port is not None
                   else settings.serving_port))
        sock.listen(2048)
    reporter = NodeReporter(platform.nodes, manager, metrics, node_id=node_id,
                            address=args.advertise or advertised_address(sock, args.host),
                            kind="replica" if args.replica_of else "node" if args.node else "embedded",
                            endpoint=args.replica_of,
                            interval_s=settings.node_heartbeat_s, version=__version__)
    sync = asyncio.get_running_loop().create_task(manager.run(stop))
    reporting = asyncio.get_running_loop().create_task(reporter.run(stop))

    async def watch_stop() -> None:
        await stop.wait()
        server.should_exit = True

    async def publish_metrics() -> None:  # the other workers' scrapes see this one's batchers
        while shared is not None:
            await asyncio.sleep(1.0)
            metrics.publish()

    watcher = asyncio.get_running_loop().create_task(watch_stop())
    publisher = asyncio.get_running_loop().create_task(publish_metrics())
    try:
        if args.accept_when_ready > 0:
            await _until_ready(manager, stop, args.accept_when_ready)
        await server.serve(sockets=[sock])
    finally:
        stop.set()
        for task in (sync, watcher, publisher, reporting):
            task.cancel()
        if not capture.closed:
            await manager.close()
            capture.close()
        if not reporter.stopping:  # ended without the lifespan shutdown
            await reporter.gone()
        platform.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    try:
        runner(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
