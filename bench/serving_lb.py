"""The load balancer's cost (issue 14, point 2): one `loopml serve` node direct vs through HAProxy.

    .venv/bin/python bench/serving_lb.py [--duration 10] [--rounds 3] [--workdir DIR]

One run, one machine: `loopml server` (SQLite home: nodes on 127.0.0.1 may share it) with
endpoint ``mnist`` (the seed CNN trained as bench/serving.py does, JSON body of one 28×28 image),
two `loopml serve` nodes on their own ports and homes, and HAProxy running deploy/haproxy.cfg
(bind and server lines swapped for these ports). wrk at c=32 (one thread, as bench/serving.py),
rows interleaved round by round so the shared machine's drift hits each alike, medians shown:

  direct         wrk → node 1
  lb→1 node      wrk → HAProxy → node 1 only (node 2 disabled in HAProxy): the LB's cost per request
  lb→2 nodes     wrk → HAProxy → nodes 1 and 2 (round robin by least connections)

Goal (issue 14): the LB path ≥ 0.8× direct. On this 2-core machine wrk, HAProxy and the nodes
share the cores, so 2 nodes cannot be faster than 1 here: each node is one process on one core
(its event loop + batcher thread); the LB adds a hop (a parse and two socket copies per request)
and its own CPU. Projection to many machines: requests/s ≈ nodes × one node's requests/s while
HAProxy's CPU (printed, per request) is below one core.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import serving as sb  # noqa: E402  bench/serving.py: model, launch, wrk helpers
from _common import workdir as make_workdir  # noqa: E402 - bench/_common.py

HAPROXY = "/usr/sbin/haproxy"
CFG = HERE.parent / "deploy" / "haproxy.cfg"
GOAL_LB = 0.8


def haproxy_config(lb_port: int, ports: list[int], enabled: int) -> str:
    cfg = CFG.read_text()
    cfg = re.sub(r"(?m)^    bind :8081$", f"    bind 127.0.0.1:{lb_port}", cfg)
    cfg = re.sub(r"(?m)^    log stdout.*\n|^    log global\n|^    server node\d .*\n", "", cfg)
    servers = "".join(f"    server node{i + 1} 127.0.0.1:{p} check{'' if i < enabled else ' disabled'}\n"
                      for i, p in enumerate(ports))
    return cfg.rstrip("\n") + "\n" + servers


def start_haproxy(workdir: Path, name: str, cfg_text: str, port: int) -> sb.Server:
    cfg = workdir / f"{name}.cfg"
    cfg.write_text(cfg_text)
    return sb.spawn(name, [HAPROXY, "-f", str(cfg), "-db"],
                    f"http://127.0.0.1:{port}/endpoints/{sb.ENDPOINT}/invocations", workdir)


def start_node(workdir: Path, name: str, port: int, control_home: Path) -> sb.Server:
    home = workdir / f"{name}-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {"LOOPML_HOME": str(home), "LOOPML_DATABASE_URL": f"sqlite:///{control_home / 'loopml.db'}",
           "LOOPML_ARTIFACT_URI": str(control_home / "artifacts")}
    loopml_bin = Path(sys.executable).with_name("loopml")
    return sb.spawn(name, [str(loopml_bin), "serve", "--host", "127.0.0.1", "--port", str(port)],
                    f"http://127.0.0.1:{port}/endpoints/{sb.ENDPOINT}/invocations", workdir, env=env)


def cpu_s(pid: int) -> float:
    return sum(sb.cpu_seconds(p) for p in sb.process_tree(pid))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    for tool in ("wrk", HAPROXY):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install -y wrk haproxy")
    tmp, workdir = make_workdir(args.workdir, "loopml-bench-lb-")
    servers: list[sb.Server] = []
    try:
        model = sb.prepare_model(workdir, args.epochs)
        body = sb.write_bodies(model, workdir)[0]  # JSON
        control = sb.launch_loopml(model, workdir)
        servers.append(control)
        ports = [sb.free_port(), sb.free_port()]
        nodes = [start_node(workdir, f"node{i + 1}", port, workdir / "loopml-home") for i, port in enumerate(ports)]
        servers += nodes
        lb_ports = [sb.free_port(), sb.free_port()]
        lbs = {1: start_haproxy(workdir, "lb-1-node", haproxy_config(lb_ports[0], ports, 1), lb_ports[0]),
               2: start_haproxy(workdir, "lb-2-nodes", haproxy_config(lb_ports[1], ports, 2), lb_ports[1])}
        servers += lbs.values()
        rows = {"direct": nodes[0], "lb→1 node": lbs[1], "lb→2 nodes": lbs[2]}
        for server in [*nodes, *lbs.values()]:
            sb.wait_ready(server, body)
            sb.check_answer(server, body, model)
        for server in rows.values():  # warm up every path (each node's batcher, HAProxy's pools)
            sb.run_wrk(server, body, 32, 3)
        results: dict[str, list[dict]] = {name: [] for name in rows}
        for r in range(args.rounds):
            for name, server in rows.items():
                lb = server if server in lbs.values() else None
                before = cpu_s(lb.proc.pid) if lb else 0.0
                cell = sb.run_wrk(server, body, 32, args.duration)
                cell["lb_cpu_us"] = ((cpu_s(lb.proc.pid) - before) / max(cell["requests"], 1) * 1e6) if lb else None
                results[name].append(cell)
                sb.log(f"round {r + 1} {name}: {cell['rps']:.0f} req/s, p50 {cell['p50_ms']:.2f} ms, "
                       f"p99 {cell['p99_ms']:.2f} ms, errors {cell['errors']}")
        load = os.getloadavg()
        print(f"\nLoopML data-plane node direct vs through HAProxy {subprocess.run([HAPROXY, '-v'], capture_output=True, text=True).stdout.split()[2]}"
              f", c=32, wrk -t1, JSON body of one 28x28 image, {args.rounds} rounds x {args.duration:g} s, medians; "
              f"load average {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores\n")
        print("| path | req/s | p50 ms | p99 ms | errors | HAProxy CPU µs/req | vs direct |")
        print("|---|---|---|---|---|---|---|")
        direct = statistics.median(c["rps"] for c in results["direct"])
        for name, cells in results.items():
            rps = statistics.median(c["rps"] for c in cells)
            lb_cpu = [c["lb_cpu_us"] for c in cells if c["lb_cpu_us"] is not None]
            print(f"| {name} | {rps:.0f} | {statistics.median(c['p50_ms'] for c in cells):.2f} | "
                  f"{statistics.median(c['p99_ms'] for c in cells):.2f} | {sum(c['errors'] for c in cells)} | "
                  f"{f'{statistics.median(lb_cpu):.0f}' if lb_cpu else '-'} | {rps / direct:.2f}× |")
        worst = min(statistics.median(c["rps"] for c in cells) for name, cells in results.items() if name != "direct")
        print(f"\ngoal: LB path ≥ {GOAL_LB}× direct: {worst / direct:.2f}× "
              f"({'met' if worst / direct >= GOAL_LB else 'NOT met'})")
    finally:
        for server in reversed(servers):
            sb.stop(server)
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
