"""API tokens: ``lml_<id>_<secret>``. The id (12 hex) is public — lists, the audit log, revoke —
and the secret (48 hex = 192 random bits) is shown once and kept only as its sha256 (a fast hash
is right for a high-entropy random secret: nothing to brute-force)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from loopml.core.errors import InvalidInput

PREFIX = "lml_"
_TOKEN = re.compile(r"lml_([0-9a-f]{12})_([0-9a-f]{48})")
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def mint() -> tuple[str, str, str]:
    """A new token: (id, the whole token to show once, the hash to store)."""
    token_id, secret = secrets.token_hex(6), secrets.token_hex(24)
    return token_id, f"{PREFIX}{token_id}_{secret}", hash_secret(secret)


def split(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    m = _TOKEN.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def parse_expires(text: str | None) -> timedelta | None:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w``; ``never`` or None: no expiry."""
    if text is None or str(text).strip().lower() in ("", "never"):
        return None
    m = _DURATION.fullmatch(str(text).strip().lower())
    if m is None or int(m.group(1)) == 0:
        raise InvalidInput(f"expiry {text!r} is not valid: give a duration like 30d, 12h, 90m or 2w (or never)")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds > 10 * 365 * 86400:
        raise InvalidInput(f"expiry {text!r} is too long: at most 10 years (or never)")
    return timedelta(seconds=seconds)
