"""Identity and access: users, roles, API tokens, the one permission table of every control-plane
route, the principal a request acts as, and the audit trail of what it changed.

permissions (roles, the permission grammar, ROUTES: method + path template → permission; pure),
tokens (``lml_<id>_<secret>``: minting, parsing, hashing, ``--expires 30d``; pure), principal (who
a request acts as and what it may do; pure), service (users, tokens, resolving a bearer token,
whether auth is on, a function invocation's short-lived token, audit records; uses the store).
"""
