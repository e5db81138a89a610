"""Registry changes: register versions, move / remove aliases (recorded in alias_events), delete versions
and names. Every function is one transaction; see `app.services.registry` for the concepts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import AliasEvent, Model, ModelAlias, ModelBase, ModelVersion, RegisteredModel, utcnow
from app.db.repositories import lock_rows, new_id
from app.services.errors import Conflict, NotFound, UnprocessableInput
from app.services.registry import (
    Actor,
    aliases_of,
    check_alias,
    check_case_twin,
    check_name,
    check_tags,
    event_dict,
    find_registered,
    get_alias,
    get_registered,
    get_version,
    resolve_model_ref,
    version_dict,
)


def _record(s: Session, rm: RegisteredModel, alias: str, old: int | None, new: int | None, actor: Actor) -> None:
    s.add(
        AliasEvent(
            id=new_id("aev"),
            registered_model_id=rm.id,
            alias=alias,
            from_version=old,
            to_version=new,
            actor_key_id=actor.key_id,
            actor=actor.name,
            at=utcnow(),
        )
    )


ALLOW_HINT = 'send "allow_not_promoted": true'  # the command line says its own flag instead (app.cli)
REGISTER_ATTEMPTS = 3  # a first registration racing the creation of its name tries again (then 409)


def lock_name(s: Session, name: str) -> RegisteredModel | None:
    """Take the name's write lock for the rest of the transaction, then read it (None: no such name).

    Every change of a name (versions, aliases, deletes) starts here, so two changes of one name run one after
    the other and each sees the other's result: an alias cannot be moved onto a version that is being deleted,
    and each alias event's `from_version` is the previous event's `to_version`. PostgreSQL locks the row at this
    UPDATE; SQLite, whose driver begins the transaction at the first write (and ignores FOR UPDATE), takes its
    database write lock here, before anything is read."""
    s.execute(
        update(RegisteredModel)
        .where(RegisteredModel.name == name)
        .values(updated_at=RegisteredModel.updated_at)  # a no-op write: only the lock is wanted
        .execution_options(synchronize_session=False)
    )
    return find_registered(s, name)


def get_locked(s: Session, name: str) -> RegisteredModel:
    row = lock_name(s, name)
    return row if row is not None else get_registered(s, name)  # NotFound with the usual hint


def _in_dim(s: Session, model: Model) -> int | None:
    base = s.get(ModelBase, model.base_id)
    dim = (base.dims or {}).get("in_dim") if base is not None else None
    return int(dim) if dim is not None else None


def _check_same_input(s: Session, rm: RegisteredModel, model: Model) -> None:
    """Every version of a name reads the same feature size: clients score `name@alias` with bags from one
    extractor, and moving an alias to a model of another D would make each of their requests fail."""
    latest = s.scalar(
        select(ModelVersion).where(ModelVersion.registered_model_id == rm.id).order_by(ModelVersion.version.desc())
    )
    other = s.get(Model, latest.model_id) if latest is not None else None
    if latest is None or other is None:
        return
    have, new = _in_dim(s, other), _in_dim(s, model)
    if have is not None and new is not None and have != new:
        raise UnprocessableInput(
            f"model {model.id} reads {new}-dimensional features, but the versions of {rm.name!r} read {have} "
            f"(version {latest.version}: {other.id}); clients scoring {rm.name}@<alias> send bags of one feature "
            "extractor, so register this model under another name"
        )


def check_promoted(s: Session, rm: RegisteredModel, mv: ModelVersion, alias: str, allow_not_promoted: bool) -> None:
    """An alias is what clients predict with: it may point at a model that its merge job's promotion gate marked
    `not_promoted` (not better than the target's own model on inner validation) only when asked explicitly."""
    model = s.get(Model, mv.model_id)
    if allow_not_promoted or model is None or model.promotion_status != "not_promoted":
        return
    reason = ((model.promotion or {}).get("reason") if isinstance(model.promotion, dict) else None) or ""
    raise Conflict(
        f"version {mv.version} of {rm.name!r} ({mv.model_id}) was not promoted by its merge job's gate"
        + (f" ({reason})" if reason else "")
        + f"; look at GET /models/{mv.model_id} (`promotion`), then {ALLOW_HINT} to point "
        f"{rm.name}@{alias} at it anyway"
    )


def _move(
    s: Session, rm: RegisteredModel, alias: str, version: int, actor: Actor, allow_not_promoted: bool = False
) -> int | None:
    """Point `alias` at `version` (creating it), record the change; returns the previous version. A version whose
    model was not promoted is refused unless `allow_not_promoted` (see check_promoted)."""
    check_promoted(s, rm, get_version(s, rm, version), alias, allow_not_promoted)
    stmt = select(ModelAlias).where(ModelAlias.registered_model_id == rm.id, ModelAlias.alias == alias)
    row = s.scalar(stmt.with_for_update())  # PostgreSQL: concurrent moves of one alias queue up here
    old = None if row is None else row.version
    if row is None:
        s.add(
            ModelAlias(
                id=new_id("alias"),
                registered_model_id=rm.id,
                alias=alias,
                version=version,
                updated_by=actor.name,
                updated_at=utcnow(),
            )
        )
    elif old != version:
        row.version, row.updated_by, row.updated_at = version, actor.name, utcnow()
    if old != version:
        _record(s, rm, alias, old, version, actor)
        rm.updated_at = utcnow()
    s.flush()
    return old


def register_version(
    *,
    ctx: Any,
    name: str,
    model_ref: str,
    actor: Actor,
    description: str | None = None,
    tags: dict[str, Any] | None = None,
    aliases: list[str] | None = None,
    allow_not_promoted: bool = False,
) -> dict[str, Any]:
    """Register the model `model_ref` names as the next version of `name` (the name is created on first use)
    and point `aliases` at it (refused for a not-promoted model unless `allow_not_promoted`). Returns the
    version's view."""
    check_name(name)
    tags_ = check_tags(tags)
    for a in aliases or []:
        check_alias(a)
    for attempt in range(REGISTER_ATTEMPTS):
        try:
            return _register(ctx, name, model_ref, actor, description, tags_, aliases, allow_not_promoted)
        except IntegrityError:  # the name was created (or the model deleted) concurrently: look again
            if attempt == REGISTER_ATTEMPTS - 1:
                break
    raise Conflict(f"registered model {name!r} changed concurrently; register the version again")


def _register(
    ctx: Any, name: str, model_ref: str, actor: Actor, description: str | None, tags_: dict[str, Any],
    aliases: list[str] | None, allow_not_promoted: bool,
) -> dict[str, Any]:  # fmt: skip
    with ctx.session() as s:
        rm = lock_name(s, name)
        model = resolve_model_ref(s, model_ref)
        if not lock_rows(s, Model, [model.id]):  # a DELETE /models racing this: it waits, or it won and this is 404
            raise NotFound(f"model {model_ref!r} was deleted while it was being registered")
        if rm is not None:
            _check_same_input(s, rm, model)
        else:
            check_case_twin(s, name)
            rm = RegisteredModel(id=new_id("rm"), name=name, tags={}, next_version=1)
            s.add(rm)
            s.flush()
        s.execute(
            update(RegisteredModel)
            .where(RegisteredModel.id == rm.id)
            .values(next_version=RegisteredModel.next_version + 1, updated_at=utcnow())
        )
        s.refresh(rm)
        version = rm.next_version - 1
        mv = ModelVersion(
            id=new_id("mv"),
            registered_model_id=rm.id,
            version=version,
            model_id=model.id,
            description=description,
            tags=tags_,
            created_by=actor.name,
            created_at=utcnow(),
        )
        s.add(mv)
        s.flush()
        for a in aliases or []:
            _move(s, rm, a, version, actor, allow_not_promoted)
        return version_dict(rm, mv, sorted(set(aliases or [])))


def get_version_dict(*, ctx: Any, name: str, version: int) -> dict[str, Any]:
    with ctx.session() as s:
        rm = get_registered(s, name)
        mv = get_version(s, rm, version)
        return version_dict(rm, mv, [a.alias for a in aliases_of(s, rm) if a.version == version])


def update_version(
    *, ctx: Any, name: str, version: int, description: str | None = None, tags: dict[str, Any] | None = None
) -> dict[str, Any]:
    with ctx.session() as s:
        rm = get_locked(s, name)
        mv = get_version(s, rm, version)
        if description is not None:
            mv.description = description or None
        if tags is not None:
            mv.tags = check_tags(tags)
        s.flush()
        return version_dict(rm, mv, [a.alias for a in aliases_of(s, rm) if a.version == version])


def set_alias(
    *, ctx: Any, name: str, alias: str, version: int, actor: Actor, allow_not_promoted: bool = False
) -> dict[str, Any]:
    """Move (or create) `alias` to `version` atomically; returns {name, alias, version, previous_version, …}."""
    check_alias(alias)
    try:
        with ctx.session() as s:
            rm = get_locked(s, name)
            old = _move(s, rm, alias, version, actor, allow_not_promoted)
            mv = get_version(s, rm, version)
            row = get_alias(s, rm, alias)
            out = {
                "name": name,
                "alias": alias,
                "version": version,
                "previous_version": old,
                "model_id": mv.model_id,
                "updated_by": row.updated_by,  # unchanged when the alias already pointed there
                "updated_at": row.updated_at,
            }
    except IntegrityError:  # the same alias created concurrently
        raise Conflict(f"alias {name}@{alias} was changed concurrently; send the request again") from None
    return out


def get_alias_dict(*, ctx: Any, name: str, alias: str) -> dict[str, Any]:
    with ctx.session() as s:
        rm = get_registered(s, name)
        row = get_alias(s, rm, alias)
        mv = get_version(s, rm, row.version)
        return {
            "name": name,
            "alias": alias,
            "version": row.version,
            "previous_version": None,
            "model_id": mv.model_id,
            "updated_by": row.updated_by,
            "updated_at": row.updated_at,
        }


def delete_alias(*, ctx: Any, name: str, alias: str, actor: Actor) -> None:
    with ctx.session() as s:
        rm = get_locked(s, name)
        row = get_alias(s, rm, alias)
        _record(s, rm, alias, row.version, None, actor)
        s.delete(row)
        rm.updated_at = utcnow()


def alias_history(
    *,
    ctx: Any,
    name: str,
    alias: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    newest_first: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """Recorded changes of the name's aliases (or of one alias), oldest first (or newest first), one page of them
    (`limit` None: every one from `offset` on); returns (events, total number of matching events)."""
    with ctx.session() as s:
        rm = get_registered(s, name)
        where = [AliasEvent.registered_model_id == rm.id]
        if alias is not None:
            where.append(AliasEvent.alias == alias)
        total = int(s.scalar(select(func.count()).select_from(AliasEvent).where(*where)) or 0)
        order = (AliasEvent.at.desc(), AliasEvent.id.desc()) if newest_first else (AliasEvent.at, AliasEvent.id)
        stmt = select(AliasEvent).where(*where).order_by(*order).offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [event_dict(rm, e) for e in s.scalars(stmt)], total


def delete_version(*, ctx: Any, name: str, version: int) -> None:
    """Remove a version (the model itself stays); Conflict while an alias points at it."""
    with ctx.session() as s:
        rm = get_locked(s, name)
        mv = get_version(s, rm, version)
        held = [a.alias for a in aliases_of(s, rm) if a.version == version]
        if held:
            raise Conflict(
                f"version {version} of {name!r} is the target of alias(es) {', '.join(held)}; move them to another "
                f"version (PUT /registered-models/{name}/aliases/<alias>) or delete them first",
                details={"used_by": [f"alias {name}@{a}" for a in held]},
            )
        s.delete(mv)


def delete_registered_model(*, ctx: Any, name: str) -> None:
    """Remove a name with its versions and alias history (the models stay); Conflict while it has aliases."""
    with ctx.session() as s:
        rm = get_locked(s, name)
        held = [f"{name}@{a.alias}" for a in aliases_of(s, rm)]
        if held:
            raise Conflict(
                f"registered model {name!r} still has aliases ({', '.join(held)}) that clients may use; delete them "
                f"first (DELETE /registered-models/{name}/aliases/<alias>)",
                details={"used_by": [f"alias {h}" for h in held]},
            )
        for table in (AliasEvent, ModelVersion):
            s.execute(delete(table).where(table.registered_model_id == rm.id))
        s.delete(rm)


def model_registrations(s: Session, model_id: str) -> list[str]:
    """What in the registry points at a model: ["alias brca@champion (version 2)", "version brca/2", …]."""
    found: list[str] = []
    for mv in s.scalars(select(ModelVersion).where(ModelVersion.model_id == model_id)):
        rm = s.get(RegisteredModel, mv.registered_model_id)
        name = rm.name if rm is not None else mv.registered_model_id
        for a in s.scalars(
            select(ModelAlias).where(
                ModelAlias.registered_model_id == mv.registered_model_id, ModelAlias.version == mv.version
            )
        ):
            found.append(f"alias {name}@{a.alias} (version {mv.version})")
        found.append(f"version {name}/{mv.version}")
    return found
