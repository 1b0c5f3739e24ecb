"""Who a request acts as, and what it may do."""

from __future__ import annotations

from dataclasses import dataclass

from loopml.identity.permissions import ROLES, allows


@dataclass(frozen=True)
class Principal:
    name: str  # user name; "bootstrap" (LOOPML_TOKEN); "anonymous" (auth off); function:NAME
    kind: str  # user | bootstrap | anonymous | invocation
    grants: frozenset[str]
    role: str | None = None
    token_id: str | None = None
    user: str | None = None  # the user whose token this is (None: bootstrap, anonymous, invocation)

    def allows(self, needed: str) -> bool:
        return allows(self.grants, needed)

    def describe(self) -> str:
        """For 403 messages: ``token 1a2b3c… (user alice, role viewer)``."""
        who = {"user": f"user {self.user}", "bootstrap": "the LOOPML_TOKEN admin",
               "invocation": self.name, "anonymous": "anonymous"}[self.kind]
        token = f"token {self.token_id} " if self.token_id else ""
        role = f", role {self.role}" if self.role else ""
        return f"{token}({who}{role})"


ANONYMOUS = Principal("anonymous", "anonymous", ROLES["admin"], role="admin")
BOOTSTRAP = Principal("bootstrap", "bootstrap", ROLES["admin"], role="admin")
