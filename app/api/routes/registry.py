"""Model registry: registered names, numbered versions, aliases (moved atomically, history recorded).

Reads take a predict or admin key; changes take an admin key (the key's id and name are recorded as "who").
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response

from app.api.deps import MAX_OFFSET, AdminKey, Ctx, Page, PredictKey
from app.schemas.common import error_responses
from app.schemas.models import ModelOut
from app.schemas.registry import (
    ALIAS_PATTERN,
    AliasHistory,
    AliasOut,
    AliasSet,
    RegisteredModelCreate,
    RegisteredModelList,
    RegisteredModelOut,
    RegisteredModelUpdate,
    VersionCreate,
    VersionOut,
    VersionUpdate,
)
from app.services import registry as reg
from app.services import registry_versions as ops
from app.services.models import model_to_dict

router = APIRouter(tags=["registry"])
P = "/registered-models"
Name = Annotated[str, Path(max_length=100, description="the registered model's name", examples=["brca-survival"])]
Version = Annotated[int, Path(ge=1, description="a version number", examples=[1])]
Alias = Annotated[str, Path(pattern=ALIAS_PATTERN, description="an alias", examples=["champion"])]


@router.get(
    "/model-refs/resolve",
    response_model=ModelOut,
    responses=error_responses(400, 404),
    summary="Resolve a model reference (id, name@alias, name/version) to the model it names now",
    description="Accepts every form POST /predict accepts as `model_id`: a model id, `name@alias`, "
    "`name/<version>`, `name/latest`, or a bare registered name (its latest version).",
)
def resolve(
    ctx: Ctx,
    _key: PredictKey,
    ref: Annotated[str, Query(min_length=1, max_length=200, description="the reference", examples=["brca@champion"])],
) -> ModelOut:
    with ctx.session() as s:
        return ModelOut.model_validate(model_to_dict(reg.resolve_model_ref(s, ref)))


@router.post(
    P,
    status_code=201,
    response_model=RegisteredModelOut,
    responses=error_responses(400, 409, 422),
    summary="Create a registered model name (empty; add versions next)",
    description="Names are unique; 409 when the name exists. POST …/versions also creates a missing name.",
)
def create(ctx: Ctx, _key: AdminKey, body: RegisteredModelCreate) -> RegisteredModelOut:
    out = reg.create_registered_model(ctx=ctx, name=body.name, description=body.description, tags=body.tags)
    return RegisteredModelOut.model_validate(out)


@router.get(
    P,
    response_model=RegisteredModelList,
    summary="List registered models with their versions and aliases, sorted by name",
    description="Paged with ?limit and ?offset.",
)
def list_all(ctx: Ctx, _key: PredictKey, page: Page) -> RegisteredModelList:
    items, total = reg.list_registered_models(ctx=ctx, limit=page.limit, offset=page.offset)
    return RegisteredModelList(
        items=[RegisteredModelOut.model_validate(i) for i in items], total=total, limit=page.limit, offset=page.offset
    )


@router.get(
    P + "/{name}",
    response_model=RegisteredModelOut,
    responses=error_responses(404),
    summary="One registered model: description, tags, versions, aliases",
    description="Versions are listed oldest first, each with the aliases that point at it.",
)
def get_one(ctx: Ctx, _key: PredictKey, name: Name) -> RegisteredModelOut:
    return RegisteredModelOut.model_validate(reg.get_registered_model(ctx=ctx, name=name))


@router.patch(
    P + "/{name}",
    response_model=RegisteredModelOut,
    responses=error_responses(400, 404, 422),
    summary="Change a registered model's description and/or tags",
    description="Fields present in the body replace the stored ones; tags are replaced as a whole.",
)
def update(ctx: Ctx, _key: AdminKey, name: Name, body: RegisteredModelUpdate) -> RegisteredModelOut:
    out = reg.update_registered_model(ctx=ctx, name=name, description=body.description, tags=body.tags)
    return RegisteredModelOut.model_validate(out)


@router.delete(
    P + "/{name}",
    status_code=204,
    responses=error_responses(404, 409),
    summary="Delete a registered name with its versions and alias history (the models stay)",
    description="Refused with 409 while the name has aliases (clients may resolve them): delete the aliases first.",
)
def delete(ctx: Ctx, _key: AdminKey, name: Name) -> Response:
    ops.delete_registered_model(ctx=ctx, name=name)
    return Response(status_code=204)


@router.post(
    P + "/{name}/versions",
    status_code=201,
    response_model=VersionOut,
    responses=error_responses(400, 404, 409, 422),
    summary="Register a model as the next version of a name (created on first use)",
    description="Each registration gets the next number (1, 2, …; numbers are never reused). `aliases` are "
    "pointed at the new version in the same transaction (each move is recorded); for a model that its merge "
    "job's promotion gate marked `not_promoted` that needs `allow_not_promoted` (else 409).",
)
def add_version(ctx: Ctx, key: AdminKey, name: Name, body: VersionCreate) -> VersionOut:
    out = ops.register_version(
        ctx=ctx,
        name=name,
        model_ref=body.model_id,
        actor=reg.Actor.from_key(key),
        description=body.description,
        tags=body.tags,
        aliases=body.aliases,
        allow_not_promoted=body.allow_not_promoted,
    )
    return VersionOut.model_validate(out)


@router.get(
    P + "/{name}/versions",
    response_model=list[VersionOut],
    responses=error_responses(404),
    summary="The versions of a registered model, oldest first",
    description="Each with its model id, tags and the aliases that point at it now. `?order=desc` lists the "
    "newest first; ?limit (1–1000; default: every version) and ?offset page them; the `X-Total-Count` header "
    "counts every version.",
)
def list_versions(
    ctx: Ctx,
    _key: PredictKey,
    name: Name,
    response: Response,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="page size (default: every version)")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="versions to skip")] = 0,
    order: Annotated[Literal["asc", "desc"], Query(description="asc = oldest first, desc = newest first")] = "asc",
) -> list[VersionOut]:
    versions = reg.get_registered_model(ctx=ctx, name=name)["versions"]
    response.headers["X-Total-Count"] = str(len(versions))
    ordered = versions[::-1] if order == "desc" else versions
    page = ordered[offset : None if limit is None else offset + limit]
    return [VersionOut.model_validate(v) for v in page]


@router.get(
    P + "/{name}/versions/{version}",
    response_model=VersionOut,
    responses=error_responses(404),
    summary="One version of a registered model",
    description="The version's model id, description, tags and current aliases.",
)
def get_version(ctx: Ctx, _key: PredictKey, name: Name, version: Version) -> VersionOut:
    return VersionOut.model_validate(ops.get_version_dict(ctx=ctx, name=name, version=version))


@router.patch(
    P + "/{name}/versions/{version}",
    response_model=VersionOut,
    responses=error_responses(400, 404, 422),
    summary="Change a version's description and/or tags",
    description="Fields present in the body replace the stored ones.",
)
def update_version(ctx: Ctx, _key: AdminKey, name: Name, version: Version, body: VersionUpdate) -> VersionOut:
    out = ops.update_version(ctx=ctx, name=name, version=version, description=body.description, tags=body.tags)
    return VersionOut.model_validate(out)


@router.delete(
    P + "/{name}/versions/{version}",
    status_code=204,
    responses=error_responses(404, 409),
    summary="Delete a version (the model stays); 409 while an alias points at it",
    description="Move or delete the aliases that point at the version first.",
)
def delete_version(ctx: Ctx, _key: AdminKey, name: Name, version: Version) -> Response:
    ops.delete_version(ctx=ctx, name=name, version=version)
    return Response(status_code=204)


@router.put(
    P + "/{name}/aliases/{alias}",
    response_model=AliasOut,
    responses=error_responses(400, 404, 409, 422),
    summary="Point an alias at a version (created or moved atomically; the change is recorded)",
    description="Clients that predict with `name@alias` use the new version from the next request on. "
    "The response says which version the alias pointed at before. A version whose model was marked "
    "`not_promoted` by its merge job's promotion gate is refused (409) unless `allow_not_promoted` is true.",
)
def set_alias(ctx: Ctx, key: AdminKey, name: Name, alias: Alias, body: AliasSet) -> AliasOut:
    out = ops.set_alias(
        ctx=ctx,
        name=name,
        alias=alias,
        version=body.version,
        actor=reg.Actor.from_key(key),
        allow_not_promoted=body.allow_not_promoted,
    )
    return AliasOut.model_validate(out)


@router.get(
    P + "/{name}/aliases/{alias}",
    response_model=AliasOut,
    responses=error_responses(404),
    summary="Where an alias points now",
    description="The version, its model id, who moved the alias last and when.",
)
def get_alias(ctx: Ctx, _key: PredictKey, name: Name, alias: Alias) -> AliasOut:
    return AliasOut.model_validate(ops.get_alias_dict(ctx=ctx, name=name, alias=alias))


@router.delete(
    P + "/{name}/aliases/{alias}",
    status_code=204,
    responses=error_responses(404),
    summary="Delete an alias (recorded in the history)",
    description="Requests that use `name@alias` fail with 404 afterwards.",
)
def delete_alias(ctx: Ctx, key: AdminKey, name: Name, alias: Alias) -> Response:
    ops.delete_alias(ctx=ctx, name=name, alias=alias, actor=reg.Actor.from_key(key))
    return Response(status_code=204)


@router.get(
    P + "/{name}/alias-history",
    response_model=AliasHistory,
    responses=error_responses(404),
    summary="Every recorded alias change: who (API key id and name), when, from which version to which",
    description="Oldest first (`?order=desc`: newest first); filter one alias with ?alias=. Paged with ?limit "
    "(1–1000; default: every change) and ?offset; `total` counts every matching change.",
)
def history(
    ctx: Ctx,
    _key: PredictKey,
    name: Name,
    alias: Annotated[str | None, Query(max_length=64, description="only this alias")] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="page size (default: every change)")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="changes to skip")] = 0,
    order: Annotated[Literal["asc", "desc"], Query(description="asc = oldest first, desc = newest first")] = "asc",
) -> AliasHistory:
    items, total = ops.alias_history(
        ctx=ctx, name=name, alias=alias, limit=limit, offset=offset, newest_first=order == "desc"
    )
    return AliasHistory.model_validate({"items": items, "total": total, "limit": limit, "offset": offset})
