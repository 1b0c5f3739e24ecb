"""SDK methods for users, tokens, who am I, and the audit log."""

from __future__ import annotations

from typing import Any

from loopml.sdk.http import Connection, segment


class IdentityAPI(Connection):
    def whoami(self) -> dict[str, Any]:
        """Who this client's token is: ``{"name", "kind", "role", "token_id", "grants", "auth"}``."""
        return self._json("GET", "/whoami")

    def create_user(self, name: str, role: str, *, expires: str | None = None) -> dict[str, Any]:
        """A user with a role (admin | editor | viewer | invoker) and their first token, shown
        only in this answer: ``{"user", "token", "token_record"}``. Admin only.

        Example::

            alice = c.create_user("alice", "editor")["token"]
        """
        return self._json("POST", "/users", json={"name": name, "role": role, "expires": expires})

    def list_users(self) -> list[dict[str, Any]]:
        return self._json("GET", "/users")

    def get_user(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/users/{segment(name)}")

    def update_user(self, name: str, role: str) -> dict[str, Any]:
        """Change a user's role; their tokens follow at once (never more than the new role)."""
        return self._json("PATCH", f"/users/{segment(name)}", json={"role": role})

    def delete_user(self, name: str) -> dict[str, Any]:
        """Remove a user and all their tokens."""
        return self._json("DELETE", f"/users/{segment(name)}")

    def create_token(self, *, user: str | None = None, name: str | None = None, role: str | None = None,
                     scopes: list[str] | None = None, expires: str | None = None) -> dict[str, Any]:
        """A new token (``{"token", "record"}``; the token is shown only here), never able to do
        more than this client's token nor its user.

        Args:
            user: Whose token (default: your own; another user's: admin).
            role: A narrower role than the user's.
            scopes: Grants such as ``endpoints:mnist:invoke`` or ``workflows:retrain:start``.
            expires: Lifetime such as ``30d`` or ``12h`` (default: never).
        """
        body = {"user": user, "name": name, "role": role, "scopes": list(scopes or []), "expires": expires}
        return self._json("POST", "/tokens", json=body)

    def list_tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        return self._json("GET", "/tokens", params={"user": user} if user else None)

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token at once (by its id, the part after ``lml_``)."""
        return self._json("DELETE", f"/tokens/{segment(token_id)}")

    def audit(self, *, user: str | None = None, since: str | None = None, action: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        """The audit log, newest first (admin). ``since``: ISO time or a duration back (``1h``, ``7d``)."""
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("user", user), ("since", since), ("action", action)):
            if value is not None:
                params[key] = value
        return self._json("GET", "/audit", params=params)
