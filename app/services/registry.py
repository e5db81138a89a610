"""Model registry: registered names, numbered versions, movable aliases (with their history), tags.

A *registered model* is a name (`brca-survival`). Each registration of a models row under that name is a new
*version* (1, 2, 3 … — numbers are never reused, even after a version is deleted). An *alias* (`champion`,
`candidate` …) points at one version and moves in one transaction that also appends an `alias_events` row
(who = the API key's id and name, when, from which version to which). Model references accepted everywhere a
model is named (POST /predict, the client):

    name@alias      the version the alias points at now
    name/version    that version number (`name/latest` = the highest existing version)
    model_<hex>     a models row id
    name            the latest version of that registered model (when no model has that id)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import AliasEvent, Model, ModelAlias, ModelVersion, RegisteredModel, utcnow
from app.db.repositories import new_id
from app.services.errors import Conflict, InvalidInput, NotFound, not_found

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
RESERVED_ALIASES = ("latest",)
HINT = "list them with GET /registered-models"


@dataclass(frozen=True)
class Actor:
    """Who made a change: the API key's id (None for the local `steph` CLI) and a display name."""

    key_id: str | None
    name: str

    @classmethod
    def from_key(cls, key: Any) -> Actor:
        return cls(key_id=getattr(key, "id", None), name=str(getattr(key, "name", "") or "unknown"))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(
            f"registered model name {name!r} is invalid: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no '@' or '/': they separate aliases and versions)"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias) or alias in RESERVED_ALIASES:
        raise InvalidInput(
            f"alias {alias!r} is invalid: use 1-64 lowercase letters, digits, '_' or '-', starting with a letter "
            f"(reserved: {', '.join(RESERVED_ALIASES)})"
        )
    return alias


def check_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    """Tags are a flat {str: str} map: at most 50, keys ≤ 100 and values ≤ 1000 characters."""
    tags = dict(tags or {})
    if len(tags) > 50:
        raise InvalidInput(f"{len(tags)} tags; at most 50 are allowed")
    for k, v in tags.items():
        if not isinstance(k, str) or not 0 < len(k) <= 100 or not isinstance(v, str) or len(v) > 1000:
            raise InvalidInput(f"tag {k!r}: keys must be 1-100 characters and values strings of ≤ 1000 characters")
    return tags


# --- lookups ------------------------------------------------------------------------------------------------
def find_registered(session: Session, name: str) -> RegisteredModel | None:
    return session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))


def check_case_twin(session: Session, name: str) -> None:
    """Conflict when a name differing only in case exists: `BRCA@champion` and `brca@champion` naming two
    different models would send a hospital script to the wrong one."""
    twin = session.scalar(select(RegisteredModel.name).where(func.lower(RegisteredModel.name) == name.lower()))
    if twin is not None and twin != name:
        raise Conflict(
            f"registered model {twin!r} already exists and differs from {name!r} only in case; use {twin!r} "
            "or a clearly different name"
        )


def get_registered(session: Session, name: str) -> RegisteredModel:
    row = find_registered(session, name)
    if row is None:
        raise not_found("registered model", name, hint=HINT)
    return row


MAX_VERSION = 2**63 - 1  # the largest integer a version column holds (SQLite and PostgreSQL BIGINT)


def get_version(session: Session, rm: RegisteredModel, version: int) -> ModelVersion:
    row = None
    if 1 <= version <= MAX_VERSION:  # a larger number cannot be stored, so no such version (not a driver error)
        row = session.scalar(
            select(ModelVersion).where(ModelVersion.registered_model_id == rm.id, ModelVersion.version == version)
        )
    if row is None:
        raise NotFound(f"registered model {rm.name!r} has no version {version}; see GET /registered-models/{rm.name}")
    return row


def latest_version(session: Session, rm: RegisteredModel) -> ModelVersion:
    row = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.registered_model_id == rm.id)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )
    if row is None:
        raise NotFound(
            f"registered model {rm.name!r} has no versions yet; register one with POST "
            f"/registered-models/{rm.name}/versions"
        )
    return row


def get_alias(session: Session, rm: RegisteredModel, alias: str) -> ModelAlias:
    row = session.scalar(select(ModelAlias).where(ModelAlias.registered_model_id == rm.id, ModelAlias.alias == alias))
    if row is None:
        known = sorted(a.alias for a in aliases_of(session, rm))
        raise NotFound(
            f"registered model {rm.name!r} has no alias {alias!r}"
            + (f"; its aliases are {', '.join(known)}" if known else "; set one with PUT …/aliases/{alias}")
        )
    return row


def aliases_of(session: Session, rm: RegisteredModel) -> list[ModelAlias]:
    stmt = select(ModelAlias).where(ModelAlias.registered_model_id == rm.id).order_by(ModelAlias.alias)
    return list(session.scalars(stmt))


def resolve_model_ref(session: Session, ref: str) -> Model:
    """The models row named by `ref` (`name@alias`, `name/version`, `name/latest`, a model id, or a bare
    registered name = its latest version). NotFound says which part did not match."""
    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput("empty model reference: give a model id, name@alias or name/version")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        rm = get_registered(session, name)
        mv = get_version(session, rm, get_alias(session, rm, alias).version)
    elif "/" in ref:
        name, version = ref.split("/", 1)
        rm = get_registered(session, name)
        if version == "latest":
            mv = latest_version(session, rm)
        elif version.isdigit():
            mv = get_version(session, rm, int(version))
        else:
            raise InvalidInput(f"model reference {ref!r}: the part after '/' must be a version number or 'latest'")
    else:
        row = session.get(Model, ref)
        if row is not None:
            return row
        named = find_registered(session, ref)
        if named is None:
            raise not_found("model", ref, hint="give a model id (GET /models), name@alias or name/version")
        mv = latest_version(session, named)
    model = session.get(Model, mv.model_id)
    if model is None:  # cannot happen while the FK holds; say so clearly if it ever does
        raise NotFound(f"model reference {ref!r} points at model {mv.model_id!r}, which no longer exists")
    return model


def resolve_model_id(*, ctx: Any, ref: str) -> str:
    """The model id that `ref` names now (one read, so a moving alias resolves once per request)."""
    with ctx.session() as s:
        return resolve_model_ref(s, ref).id


# --- views --------------------------------------------------------------------------------------------------
def version_dict(rm: RegisteredModel, mv: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    return {
        "name": rm.name,
        "version": mv.version,
        "model_id": mv.model_id,
        "ref": f"{rm.name}/{mv.version}",
        "description": mv.description,
        "tags": dict(mv.tags or {}),
        "aliases": aliases,
        "created_by": mv.created_by,
        "created_at": mv.created_at,
    }


def registered_dict(session: Session, rm: RegisteredModel) -> dict[str, Any]:
    aliases = aliases_of(session, rm)
    by_version: dict[int, list[str]] = {}
    for a in aliases:
        by_version.setdefault(a.version, []).append(a.alias)
    versions = session.scalars(
        select(ModelVersion).where(ModelVersion.registered_model_id == rm.id).order_by(ModelVersion.version)
    )
    return {
        "id": rm.id,
        "name": rm.name,
        "description": rm.description,
        "tags": dict(rm.tags or {}),
        "aliases": {a.alias: a.version for a in aliases},
        "versions": [version_dict(rm, v, by_version.get(v.version, [])) for v in versions],
        "created_at": rm.created_at,
        "updated_at": rm.updated_at,
    }


def event_dict(rm: RegisteredModel, e: AliasEvent) -> dict[str, Any]:
    return {
        "name": rm.name,
        "alias": e.alias,
        "from_version": e.from_version,
        "to_version": e.to_version,
        "actor_key_id": e.actor_key_id,
        "actor": e.actor,
        "at": e.at,
    }


# --- use cases (each one transaction) -----------------------------------------------------------------------
def create_registered_model(
    *, ctx: Any, name: str, description: str | None = None, tags: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A new, empty registered name; Conflict when the name exists."""
    check_name(name)
    tags_ = check_tags(tags)
    try:
        with ctx.session() as s:
            if find_registered(s, name) is not None:
                raise Conflict(f"registered model {name!r} already exists; add versions to it or pick another name")
            check_case_twin(s, name)
            rm = RegisteredModel(id=new_id("rm"), name=name, description=description, tags=tags_, next_version=1)
            s.add(rm)
            s.flush()
            return registered_dict(s, rm)
    except IntegrityError:
        raise Conflict(f"registered model {name!r} already exists (created concurrently)") from None


def get_registered_model(*, ctx: Any, name: str) -> dict[str, Any]:
    with ctx.session() as s:
        return registered_dict(s, get_registered(s, name))


def list_registered_models(*, ctx: Any, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    with ctx.session() as s:
        total = int(s.scalar(select(func.count()).select_from(RegisteredModel)) or 0)
        rows = s.scalars(select(RegisteredModel).order_by(RegisteredModel.name).limit(limit).offset(offset))
        return [registered_dict(s, r) for r in rows], total


def update_registered_model(
    *, ctx: Any, name: str, description: str | None = None, tags: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Replace the description and/or the tags (None leaves a field as it is)."""
    with ctx.session() as s:
        rm = get_registered(s, name)
        if description is not None:
            rm.description = description or None
        if tags is not None:
            rm.tags = check_tags(tags)
        rm.updated_at = utcnow()
        s.flush()
        return registered_dict(s, rm)
