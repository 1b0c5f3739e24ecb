"""Control-plane failover (issue 14, point 4): leader kill → new leader acting, figures only (not a test).

    .venv/bin/python bench/failover.py [--runs 5] [--postgres postgresql://root@127.0.0.1:5432/test]

Two real ``loopml server`` processes on one PostgreSQL (a fresh schema, dropped at the end) and
one home. Each run: SIGKILL the leader, and at once queue a function invocation through the
survivor's API (a follower at that moment: it only writes the queued row and wakes whoever leads).
Printed per run and as the median:

  takeover   kill → the survivor holds the lease (a new epoch), read from the lease row;
  acting     kill → the queued invocation has been started by the new leader (status left
             ``queued``): the time a user waits for work to move again.

The killed server is started again (it follows) before the next run. The lease's TTL (4 s) and
the followers' attempt interval (0.5 s) bound takeover to ≈ 3.5–4.5 s after the leader's last renewal.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _common import free_port, log  # noqa: E402 - bench/_common.py

ECHO = "def handler(event, context):\n    return event\n"


def start_server(home: Path, port: int, db_url: str, artifacts: Path, out: Path) -> subprocess.Popen:
    from loopml.sdk.client import Client

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    env.update(LOOPML_HOME=str(home), LOOPML_PORT=str(port), LOOPML_SERVING_PORT="0",
               LOOPML_DATABASE_URL=db_url, LOOPML_ARTIFACT_URI=str(artifacts),
               LOOPML_CONFIG=str(home / "none.toml"), LOOPML_WARM_WORKERS="0",
               PYTHONPATH=str(ROOT / "src"))
    with open(out, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "server"], env=env,
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    client, deadline = Client(f"http://127.0.0.1:{port}", token=""), time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            client.health()
            return proc
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {out.read_text()[-2000:]}") from None
            time.sleep(0.2)
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--postgres", default=os.environ.get("LOOPML_TEST_POSTGRES_URL",
                                                          "postgresql://root@127.0.0.1:5432/test"))
    args = ap.parse_args()

    import psycopg

    from loopml.controlplane.leadership import LEASE
    from loopml.core.settings import Settings
    from loopml.platform import Platform
    from loopml.sdk.client import Client

    schema = f"loopml_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in args.postgres else "?"
    db_url = f"{args.postgres}{sep}options={quote(f'-csearch_path={schema}', safe='')}"
    work = Path(tempfile.mkdtemp(prefix="loopml-failover-"))
    home, artifacts = work / "home", work / "artifacts"
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen | None] = [None, None]
    plat = None
    takeovers: list[float] = []
    acting: list[float] = []
    try:
        for i in (0, 1):
            procs[i] = start_server(home, ports[i], db_url, artifacts, work / f"server-{i}.log")
        plat = Platform(Settings(home=home, database_url=db_url, artifact_uri=str(artifacts)))
        (work / "echo.py").write_text(ECHO)
        Client(f"http://127.0.0.1:{ports[0]}", token="").create_function("echo", work / "echo.py")
        log(f"two servers on ports {ports} (PostgreSQL schema {schema}); {args.runs} runs")
        for run in range(1, args.runs + 1):
            time.sleep(2.0)  # the leader has renewed a few times: kills land anywhere in its cycle
            lease = plat.leases.get(LEASE)
            pid = int(lease["holder"].split(":")[1])
            leader = [p.pid if p else None for p in procs].index(pid)
            survivor = Client(f"http://127.0.0.1:{ports[1 - leader]}", token="")
            killed = time.monotonic()
            procs[leader].send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            inv = survivor.invoke_function("echo", {"run": run}, mode="async")
            took = act = None
            while took is None or act is None:
                now = time.monotonic() - killed
                if now > 60:
                    raise SystemExit("no takeover within 60 s")
                if took is None and (rec := plat.leases.get(LEASE))["epoch"] > lease["epoch"] and rec["held"]:
                    took = now
                if act is None and plat.functions.invocation(inv["id"])["status"] != "queued":
                    act = now
                time.sleep(0.02)
            takeovers.append(took)
            acting.append(act)
            log(f"run {run}: takeover {took:.2f} s, acting {act:.2f} s")
            procs[leader].wait(10)  # type: ignore[union-attr]
            procs[leader] = start_server(home, ports[leader], db_url, artifacts, work / f"server-{leader}.log")
        log(f"\nleader kill → new leader holds the lease: median {statistics.median(takeovers):.2f} s "
            f"(min {min(takeovers):.2f}, max {max(takeovers):.2f})")
        log(f"leader kill → new leader acting (queued invocation started): median {statistics.median(acting):.2f} s "
            f"(min {min(acting):.2f}, max {max(acting):.2f})")
    finally:
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in procs:
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if plat is not None:
            plat.close()
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
