"""API keys: creation, hashing, authentication, scopes, and the first-start admin key.

A key looks like `steph_<scope>_<43 url-safe chars>`; only its sha256 hex is stored, plus a visible prefix
(`steph_admin_AbCd…`, 16 chars) so an operator can tell keys apart in `steph keys list`. Scopes: admin ⊃
predict (an admin key may do everything a predict key may).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sys

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.models import SCOPES, ApiKey
from app.services.context import ServiceContext
from app.services.errors import Forbidden, InvalidInput, NotFound, Unauthorized

log = logging.getLogger(__name__)
PREFIX_CHARS = 16


def hash_key(key: str) -> str:
    """sha256 hex of the key's utf-8 bytes (what `api_keys.key_hash` stores)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key(scope: str) -> str:
    return f"steph_{scope}_{secrets.token_urlsafe(32)}"


def scope_allows(granted: str, required: str) -> bool:
    """admin allows everything; predict allows only predict."""
    return granted == "admin" or granted == required


def create_api_key(session: Session, *, scope: str, name: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key (hashed); returns (row, plaintext key). The plaintext is never stored."""
    if scope not in SCOPES:
        raise InvalidInput(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    label = (name or "").strip()
    if len(label) > 100 or any(not ch.isprintable() for ch in label):
        raise InvalidInput("the key's name must be at most 100 printable characters (no tabs or line breaks)")
    key = generate_key(scope)
    row = repo.add_api_key(
        session, name=label or f"{scope} key", prefix=key[:PREFIX_CHARS], key_hash=hash_key(key), scope=scope
    )
    return row, key


def authenticate(session: Session, *, key: str | None, required_scope: str) -> ApiKey:
    """The key's row when it exists, is not revoked and allows `required_scope`.

    Raises Unauthorized (missing, unknown or revoked key) or Forbidden (scope too narrow).
    """
    if not key:
        raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    row = repo.get_api_key_by_hash(session, key_hash=hash_key(key))
    if row is None or row.revoked_at is not None:
        raise Unauthorized(
            f"invalid or revoked API key; an operator creates one with `steph keys create --scope {required_scope}`"
        )
    if not scope_allows(row.scope, required_scope):
        raise Forbidden(f"this key has scope {row.scope!r}; the request needs scope {required_scope!r}")
    return row


def revoke_api_key(session: Session, *, id_or_prefix: str) -> ApiKey:
    """Revoke the one key whose id or visible prefix matches, or the key itself when the whole secret is given
    (found by its hash; never echoed back: an operator revoking a leaked key pastes it)."""
    whole = repo.get_api_key_by_hash(session, key_hash=hash_key(id_or_prefix.strip()))
    # the prefix as `steph keys list` shows it ends in "…"; a longer piece of a key is matched on its prefix part
    wanted = id_or_prefix.strip().removesuffix("…").removesuffix("...")
    if wanted.startswith("steph_") and len(wanted) > PREFIX_CHARS:
        wanted = wanted[:PREFIX_CHARS]
    matches = [whole] if whole is not None else repo.find_api_keys(session, id_or_prefix=wanted)
    if not matches:
        shown = id_or_prefix if len(id_or_prefix) <= 24 else id_or_prefix[:16] + "…"
        raise NotFound(f"no API key matches {shown!r}; see `steph keys list`")
    if len(matches) > 1:
        raise InvalidInput(f"{len(matches)} keys match {id_or_prefix!r}; give the full key id")
    return repo.revoke_api_key(session, key=matches[0])


def bootstrap_admin_key(ctx: ServiceContext) -> str | None:
    """On the first start (no admin key was ever created, even if predict keys were) create an admin key, print
    it once to stderr and write it to `<home>/admin.key` (mode 0600). Returns the key, or None when an admin key
    exists or existed (a deliberately revoked one is not replaced) or bootstrap is disabled."""
    if not ctx.settings.bootstrap_admin_key:
        return None
    with ctx.session() as s:
        if any(k.scope == "admin" for k in repo.list_api_keys(s)):
            return None
        _, key = create_api_key(s, scope="admin", name="bootstrap admin")
    path = ctx.settings.admin_key_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    print(f"STEPH: created the first admin API key (shown once; also saved to {path}):\n{key}", file=sys.stderr)
    log.info("created the bootstrap admin key %s… (saved to STEPH_HOME/admin.key)", key[:PREFIX_CHARS])
    return key
