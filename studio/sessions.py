"""How long sessions last, how logins are throttled and how the session cookie is set: ``SessionArguments``.

Every field has a default and an environment variable (``metadata["env"]``); ``SessionArguments.from_env()`` reads
them, and a value that does not parse fails naming its variable. The server's secret keys the hash under which
session tokens are stored (a copy of the database gives nobody a usable cookie) and names the cookie; it comes from
``CONCORD_SECRET_KEY`` or, unset, from a file created once in the data folder (``<data dir>/secret_key``), so
sessions survive a restart. Changing the secret ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path

from storage.db import data_dir

SAMESITE = ("lax", "strict", "none")


@dataclass
class SessionArguments:
    secret: str = field(
        default="",
        metadata={"env": "CONCORD_SECRET_KEY", "help": "the server's secret; empty: <data dir>/secret_key, made once"},
    )
    session_hours: float = field(
        default=12.0, metadata={"env": "CONCORD_SESSION_HOURS", "help": "a session ends this long after the login"}
    )
    max_failures: int = field(
        default=5,
        metadata={"env": "CONCORD_LOGIN_MAX_FAILURES", "help": "wrong passwords per account name within the window"},
    )
    max_failures_per_address: int = field(
        default=20,
        metadata={"env": "CONCORD_LOGIN_MAX_FAILURES_PER_ADDRESS", "help": "wrong passwords per client address"},
    )
    lockout_minutes: float = field(
        default=15.0,
        metadata={"env": "CONCORD_LOGIN_LOCKOUT_MINUTES", "help": "the window the failures are counted over"},
    )
    cookie_samesite: str = field(
        default="lax",
        metadata={"env": "CONCORD_COOKIE_SAMESITE", "help": "lax | strict | none (none: only for embedding)"},
    )
    cookie_secure: bool = field(
        default=False,
        metadata={"env": "CONCORD_COOKIE_SECURE", "help": "mark the cookie Secure even when no HTTPS is seen"},
    )

    def __post_init__(self) -> None:
        if self.session_hours <= 0 or self.lockout_minutes <= 0:
            raise ValueError("session_hours and lockout_minutes must be positive")
        if self.max_failures < 1 or self.max_failures_per_address < 1:
            raise ValueError("max_failures and max_failures_per_address must be at least 1")
        self.cookie_samesite = self.cookie_samesite.lower()
        if self.cookie_samesite not in SAMESITE:
            raise ValueError(f"cookie_samesite must be one of {', '.join(SAMESITE)} (got {self.cookie_samesite!r})")
        if self.cookie_samesite == "none":
            self.cookie_secure = True  # browsers drop a SameSite=None cookie that is not Secure

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SessionArguments:
        """The defaults, overridden by whichever of the fields' environment variables are set."""
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = environ.get(spec.metadata["env"], "").strip()
            if not raw:
                continue
            kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
            try:
                values[spec.name] = {"float": float, "int": int, "bool": _flag, "str": str}[kind](raw)
            except ValueError:
                raise ValueError(f"{spec.metadata['env']}={raw!r} is not a valid {kind}") from None
        return cls(**values)

    @property
    def lifetime(self) -> timedelta:
        return timedelta(hours=self.session_hours)

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.lockout_minutes)

    @cached_property
    def key(self) -> bytes:
        return self.secret.encode() if self.secret else _stored_secret(data_dir() / "secret_key")

    def hash_token(self, token: str) -> str:
        """What the database keeps of a session token: HMAC-SHA256 under the server's secret."""
        return hmac.new(self.key, token.encode(), hashlib.sha256).hexdigest()

    @cached_property
    def cookie_name(self) -> str:
        """Distinct per secret, so two studios on one host name (different ports) keep their own sessions."""
        return "concord-session-" + hmac.new(self.key, b"cookie name", hashlib.sha256).hexdigest()[:10]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def minutes_until(moment: datetime, now: datetime) -> int:
    """Whole minutes to wait, at least one."""
    return max(1, math.ceil((moment - now).total_seconds() / 60))


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _stored_secret(path: Path) -> bytes:
    """The secret kept in ``path``, created (mode 0600) by whichever process gets there first."""
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(draft, path)  # atomic: a second process finds the first one's secret, complete
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < 32:
        raise ValueError(f"the secret in {path} is too short: delete the file (every session ends) or set one")
    return secret.encode()
