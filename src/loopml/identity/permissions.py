"""Roles, the permission grammar and THE table of what every control-plane route requires.

A permission is ``RESOURCE:ACTION`` (``datasets:write``) or, scoped to one named object,
``RESOURCE:NAME:ACTION`` (``endpoints:mnist:invoke``, ``workflows:retrain-mnist:start``). An
unscoped grant covers every name; a scoped grant only its own. ``*`` (admin) covers everything.

``ROUTES`` maps each route (method + path template, as FastAPI declares it) to what it requires:
a permission (``{name}`` in the path scopes it to that object), ``PUBLIC`` (no token: health
checks, webhooks that check their own secret) or ``AUTHENTICATED`` (any valid token). A route
missing from the table requires ``*``: deny by default. tests/test_identity_matrix.py walks
``/openapi.json`` and fails when a route has no entry here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from loopml.core.errors import InvalidInput

PUBLIC, AUTHENTICATED, EVERYTHING = "public", "authenticated", "*"

# resource → the actions it has; NAMED: resources whose routes name one object ({name})
ACTIONS: dict[str, tuple[str, ...]] = {
    "datasets": ("read", "write"), "jobs": ("read", "write"), "models": ("read", "write"),
    "endpoints": ("read", "write", "invoke"), "functions": ("read", "write", "invoke"),
    "triggers": ("read", "write"), "workflows": ("read", "write", "start"), "monitors": ("read", "write"),
    "tuning": ("read", "write"), "cluster": ("read",), "files": ("write",), "secrets": ("read",),
    "users": ("read", "write"), "tokens": ("self",), "audit": ("read",),
}
NAMED = frozenset({"datasets", "models", "endpoints", "functions", "triggers", "workflows", "monitors", "tuning"})
_OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_READ = ("datasets", "jobs", "models", "endpoints", "functions", "triggers", "workflows", "monitors", "tuning",
         "cluster")
_WRITE = ("datasets", "jobs", "models", "endpoints", "functions", "triggers", "workflows", "monitors", "tuning",
          "files")
VIEWER = frozenset({f"{r}:read" for r in _READ} | {"tokens:self"})
ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({EVERYTHING}),
    # reads everything but secrets (function environment values), changes nothing
    "viewer": VIEWER,
    "editor": VIEWER | {f"{r}:write" for r in _WRITE} | {"endpoints:invoke", "functions:invoke",
                                                         "workflows:start", "secrets:read"},
    # calls endpoints and starts workflows, nothing else (scoped tokens narrow it to names)
    "invoker": frozenset({"endpoints:invoke", "workflows:start", "tokens:self"}),
}
ROLE_NAMES = tuple(ROLES)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # FastAPI's template: /models/{name}/aliases/{alias}
    permission: str  # RESOURCE:ACTION (scoped by {name} when the resource is NAMED), PUBLIC, AUTHENTICATED

    def required(self, params: dict[str, str]) -> str:
        """The permission this call needs: scoped to ``{name}`` when the route names an object."""
        resource, _, action = self.permission.partition(":")
        if action and resource in NAMED and "name" in params and "{name}" in self.path:
            return f"{resource}:{params['name']}:{action}"
        return self.permission


def _routes(spec: str) -> tuple[Route, ...]:
    rows = []
    for line in spec.strip().splitlines():
        method, path, permission = line.split()
        rows.append(Route(method, path, permission))
    return tuple(rows)


# One line per route: METHOD PATH PERMISSION. HEAD is GET.
ROUTES: tuple[Route, ...] = _routes("""
GET    /health                                      public
GET    /healthz                                     public
GET    /openapi.json                                authenticated
GET    /docs                                        authenticated
GET    /docs/oauth2-redirect                        authenticated
GET    /redoc                                       authenticated
GET    /static-offline-docs/{path:path}             public
GET    /                                            public
GET    /ui                                          public
GET    /ui/{path:path}                              public
GET    /whoami                                      authenticated
POST   /hooks/{name}                                public
GET    /datasets                                    datasets:read
POST   /datasets                                    datasets:write
POST   /datasets/upload                             datasets:write
GET    /datasets/{name}                             datasets:read
DELETE /datasets/{name}                             datasets:write
GET    /datasets/{name}/versions/{version}          datasets:read
GET    /datasets/{name}/versions/{version}/rows     datasets:read
GET    /datasets/{name}/versions/{version}/models   datasets:read
DELETE /datasets/{name}/versions/{version}          datasets:write
POST   /files                                       files:write
GET    /jobs                                        jobs:read
POST   /jobs/train                                  jobs:write
POST   /jobs/predict                                jobs:write
POST   /jobs/evaluate                               jobs:write
GET    /jobs/{job_id}                               jobs:read
DELETE /jobs/{job_id}                               jobs:write
POST   /jobs/{job_id}/cancel                        jobs:write
GET    /jobs/{job_id}/logs                          jobs:read
GET    /jobs/{job_id}/events/stream                 jobs:read
GET    /jobs/{job_id}/metrics                       jobs:read
GET    /jobs/{job_id}/output                        jobs:read
POST   /jobs/{job_id}/register                      models:write
GET    /models                                      models:read
POST   /models/import                               models:write
GET    /models/{name}                               models:read
DELETE /models/{name}                               models:write
GET    /models/{name}/alias-history                 models:read
GET    /models/{name}/aliases/{alias}               models:read
PUT    /models/{name}/aliases/{alias}               models:write
DELETE /models/{name}/aliases/{alias}               models:write
GET    /models/{name}/versions/{version}            models:read
DELETE /models/{name}/versions/{version}            models:write
GET    /models/{name}/versions/{version}/download   models:read
GET    /endpoints                                   endpoints:read
POST   /endpoints                                   endpoints:write
GET    /endpoints/{name}                            endpoints:read
GET    /endpoints/{name}/stats                      endpoints:read
GET    /endpoints/{name}/captured                   endpoints:read
POST   /endpoints/{name}/invocations                endpoints:invoke
PATCH  /endpoints/{name}                            endpoints:write
DELETE /endpoints/{name}                            endpoints:write
GET    /endpoints/{name}/autoscaling                endpoints:read
PUT    /endpoints/{name}/autoscaling                endpoints:write
DELETE /endpoints/{name}/autoscaling                endpoints:write
GET    /nodes                                       endpoints:read
GET    /functions                                   functions:read
POST   /functions                                   functions:write
GET    /functions/{name}                            functions:read
PATCH  /functions/{name}                            functions:write
DELETE /functions/{name}                            functions:write
GET    /functions/{name}/invocations                functions:read
POST   /functions/{name}/invocations                functions:invoke
GET    /functions/{name}/invocations/{invocation_id} functions:read
GET    /functions/{name}/logs                       functions:read
GET    /triggers                                    triggers:read
POST   /triggers                                    triggers:write
GET    /triggers/{name}                             triggers:read
PATCH  /triggers/{name}                             triggers:write
DELETE /triggers/{name}                             triggers:write
POST   /triggers/{name}/fire                        triggers:write
GET    /triggers/{name}/history                     triggers:read
POST   /triggers/{name}/pause                       triggers:write
POST   /triggers/{name}/resume                      triggers:write
POST   /triggers/{name}/redrive                     triggers:write
GET    /workflows                                   workflows:read
POST   /workflows                                   workflows:write
GET    /workflows/{name}                            workflows:read
DELETE /workflows/{name}                            workflows:write
POST   /workflows/{name}/executions                 workflows:start
GET    /executions                                  workflows:read
GET    /executions/{execution_id}                   workflows:read
GET    /executions/{execution_id}/history           workflows:read
POST   /executions/{execution_id}/stop              workflows:write
GET    /monitors                                    monitors:read
POST   /monitors                                    monitors:write
POST   /monitors/baselines                          monitors:write
GET    /monitors/{name}                             monitors:read
DELETE /monitors/{name}                             monitors:write
POST   /monitors/{name}/dataset                     monitors:write
POST   /monitors/{name}/labels                      monitors:write
POST   /monitors/{name}/pause                       monitors:write
POST   /monitors/{name}/resume                      monitors:write
GET    /monitors/{name}/runs                        monitors:read
POST   /monitors/{name}/runs                        monitors:write
GET    /monitors/{name}/runs/{run_id}               monitors:read
GET    /monitors/{name}/runs/{run_id}/report        monitors:read
GET    /monitors/{name}/runs/{run_id}/report.html   monitors:read
GET    /alerts                                      monitors:read
GET    /alerts/{alert_id}                           monitors:read
POST   /alerts/{alert_id}/ack                       monitors:write
POST   /alerts/{alert_id}/resolve                   monitors:write
GET    /tuning                                      tuning:read
POST   /tuning                                      tuning:write
GET    /tuning/{name}                               tuning:read
DELETE /tuning/{name}                               tuning:write
POST   /tuning/{name}/stop                          tuning:write
GET    /tuning/{name}/trials                        tuning:read
GET    /cluster                                     cluster:read
GET    /users                                       users:read
POST   /users                                       users:write
GET    /users/{name}                                users:read
PATCH  /users/{name}                                users:write
DELETE /users/{name}                                users:write
GET    /tokens                                      tokens:self
POST   /tokens                                      tokens:self
DELETE /tokens/{token_id}                           tokens:self
GET    /audit                                       audit:read
""")
# served by the app but not in /openapi.json (the docs pages and their assets; the dashboard's
# static files, which hold no data: its pages call the API with the user's token)
NOT_IN_SCHEMA = frozenset({("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"),
                           ("GET", "/redoc"), ("GET", "/static-offline-docs/{path:path}"),
                           ("GET", "/"), ("GET", "/ui"), ("GET", "/ui/{path:path}")})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _compile(path: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)(:path)?\}", path):
        out.append(re.escape(path[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>.*)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(path[pos:]))
    return re.compile("".join(out))


# per method, literal routes before ones with parameters (POST /datasets/upload before /datasets/{name})
_MATCHERS: dict[str, list[tuple[re.Pattern[str], Route]]] = {}
for _route in sorted(ROUTES, key=lambda r: (r.path.count("{"), -len(r.path))):
    _MATCHERS.setdefault(_route.method, []).append((_compile(_route.path), _route))


def match(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    """The table's entry for a request (None: no such route, so ``*`` is required) and its path
    parameters."""
    for pattern, route in _MATCHERS.get("GET" if method == "HEAD" else method, ()):
        m = pattern.fullmatch(path)
        if m is not None:
            return route, m.groupdict()
    return None, {}


def allows(grants: Iterable[str], needed: str) -> bool:
    """Whether ``grants`` cover ``needed`` (``*``; equal; an unscoped grant for a scoped need)."""
    grants = grants if isinstance(grants, (set, frozenset)) else set(grants)
    if EVERYTHING in grants or needed in grants:
        return True
    parts = needed.split(":")
    return len(parts) == 3 and f"{parts[0]}:{parts[2]}" in grants


def role_grants(role: str) -> frozenset[str]:
    if role not in ROLES:
        raise InvalidInput(f"role {role!r} is not valid: use {', '.join(ROLE_NAMES)}")
    return ROLES[role]


def check_permission(text: object, what: str = "permission") -> str:
    """``RESOURCE:ACTION`` or ``RESOURCE:NAME:ACTION`` with a known resource and action."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} {text!r} is not valid: give RESOURCE:ACTION or RESOURCE:NAME:ACTION")
    parts = text.split(":")
    resource, action = parts[0], parts[-1]
    if len(parts) not in (2, 3) or resource not in ACTIONS:
        raise InvalidInput(f"{what} {text!r} is not valid: give RESOURCE:ACTION or RESOURCE:NAME:ACTION, "
                           f"RESOURCE one of {', '.join(ACTIONS)}")
    if action not in ACTIONS[resource]:
        raise InvalidInput(f"{what} {text!r} is not valid: {resource} has the actions "
                           f"{', '.join(ACTIONS[resource])}")
    if len(parts) == 3 and (resource not in NAMED or _OBJECT_NAME.fullmatch(parts[1]) is None):
        raise InvalidInput(f"{what} {text!r} is not valid: " + (
            f"{resource} cannot be scoped to one name" if resource not in NAMED
            else f"{parts[1]!r} is not an object name"))
    return text


MAX_GRANTS = 100  # per token or function: each request re-reads them, so a list stays short


def check_permissions(items: Iterable[object], what: str = "permission") -> list[str]:
    """Validated, deduplicated, in the order given; at most MAX_GRANTS."""
    checked = list(dict.fromkeys(check_permission(p, what) for p in items))
    if len(checked) > MAX_GRANTS:
        raise InvalidInput(f"{len(checked)} {what}s given: at most {MAX_GRANTS} (use a role, or an unscoped "
                           "grant such as endpoints:invoke, instead of many scoped ones)")
    return checked


def role_matrix() -> dict[str, dict[str, bool]]:
    """``{"METHOD PATH": {role: allowed}}`` for every route (docs/security.md's table)."""
    out = {}
    for route in ROUTES:
        if route.permission in (PUBLIC, AUTHENTICATED):
            allowed = dict.fromkeys(ROLES, True)
        else:
            allowed = {role: allows(grants, route.permission) for role, grants in ROLES.items()}
        out[f"{route.method} {route.path}"] = allowed
    return out


def markdown_table() -> str:
    """docs/security.md's table of every route (tests/test_identity_docs.py keeps it in step)."""
    lines = ["| route | permission | admin | editor | viewer | invoker |", "|---|---|:-:|:-:|:-:|:-:|"]
    matrix = role_matrix()
    for route in ROUTES:
        allowed = matrix[f"{route.method} {route.path}"]
        marks = " | ".join("✓" if allowed[role] else "·" for role in ("admin", "editor", "viewer", "invoker"))
        permission = route.permission.replace(":", ":{name}:", 1) if (
            route.permission.split(":")[0] in NAMED and "{name}" in route.path) else route.permission
        lines.append(f"| `{route.method} {route.path}` | `{permission}` | {marks} |")
    return "\n".join(lines) + "\n"
