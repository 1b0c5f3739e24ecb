"""`make demo`, automation act: follow what one dropped file sets in motion, step by step.

trigger firing → function invocation (new dataset version, starts the workflow) → the retraining
workflow's states as they run → the endpoint's answer afterwards.

    python scripts/demo_automation.py TRIGGER ENDPOINT [TIMEOUT_S]
"""

from __future__ import annotations

import json
import sys
import time

from loopml.sdk.client import Client


def wait_for(what: str, fetch, timeout: float, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if value:
            return value
        time.sleep(poll)
    raise SystemExit(f"demo: gave up waiting for {what} after {timeout:.0f} s")


def brief(value, limit: int = 110) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def follow_function(c: Client, firing: dict, timeout: float) -> dict:
    started = firing.get("started_id")
    fn = firing.get("target", {}).get("name") if isinstance(firing.get("target"), dict) else firing.get("target")
    print(f"  trigger fired at {firing.get('at')} for {firing.get('dedupe_key') or ''} → invocation {started} of {fn}")
    inv = wait_for("the function", lambda: (lambda r: r if r["status"] in ("succeeded", "failed") else None)(
        c.function_invocation(fn, started)), timeout)
    print(f"  function {fn}: {inv['status']} in {inv.get('duration_ms') or 0:.0f} ms")
    for line in (inv.get("logs") or "").strip().splitlines()[-6:]:
        print(f"    | {line}")
    if inv["status"] != "succeeded":
        raise SystemExit(f"demo: function failed: {inv.get('error_type')}: {inv.get('error_message')}")
    return inv["result"]


def follow_execution(c: Client, execution_id: str, timeout: float) -> dict:
    print(f"  workflow execution {execution_id}")
    seen = 0
    deadline = time.monotonic() + timeout
    while True:
        events = c.execution_history(execution_id)
        for ev in events[seen:]:
            kind, state, d = ev.get("type"), ev.get("state"), ev.get("details") or {}
            if kind == "StateEntered":
                print(f"    → {state}")
            elif kind == "TaskSucceeded":
                out = d.get("output") or {}
                if isinstance(out, dict) and "promote" in out:  # the evaluation: say what it decided and why
                    print(f"      {state}: {out.get('reason')}")
                else:
                    print(f"      {state} done: {brief(out)}")
            elif kind in ("TaskFailed", "ExecutionFailed", "ErrorCaught", "RetryScheduled"):
                print(f"      {kind} {state or ''}: {d.get('error', '')} {d.get('cause', '')[:160]}")
        seen = len(events)
        record = c.execution(execution_id)
        if record["status"] not in ("PENDING", "RUNNING"):
            return record
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: execution still {record['status']} after {timeout:.0f} s")
        time.sleep(1.0)


def main() -> None:
    trigger, endpoint = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 1800
    c = Client()
    firing = wait_for("the trigger to fire", lambda: next(iter(c.trigger_history(trigger, limit=1)), None), 120)
    result = follow_function(c, firing, timeout)
    record = follow_execution(c, result["execution"], timeout)
    out = record.get("output") or {}
    print(f"  execution {record['status']}" + (f": {record.get('error')} {record.get('cause')}" if record.get("error") else ""))
    if out.get("promoted"):
        print(f"  promoted {out.get('ref')} to {out.get('model')}@{out.get('alias')}: {out.get('reason')}")
    else:
        print(f"  kept the champion: {out.get('reason') or brief(out)}")
    ep = c.endpoint(endpoint)
    print(f"  endpoint {endpoint}: {ep['status']}, serving {brief(ep.get('resolved'))}")
    if record["status"] != "SUCCEEDED":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
