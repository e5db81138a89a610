"""Request/response models of the model registry (registered names, versions, aliases, alias history)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
Tags = dict[str, str]


class RegisteredModelCreate(BaseModel):
    """POST /registered-models body: a new, empty name (versions are added with POST …/versions)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "brca-survival", "description": "BRCA DSS", "tags": {"team": "onc"}}]},
    )

    name: str = Field(pattern=NAME_PATTERN, description="unique name: letters, digits, '_', '.', '-' (no '@' or '/')")
    description: str | None = Field(default=None, max_length=5000, description="free text shown with the name")
    tags: Tags = Field(default_factory=dict, description="flat string → string labels (at most 50)")


class RegisteredModelUpdate(BaseModel):
    """PATCH body: fields that are present replace the stored ones; absent fields stay."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"description": "BRCA DSS, UNI2-h"}]})

    description: str | None = Field(default=None, max_length=5000, description="new description ('' clears it)")
    tags: Tags | None = Field(default=None, description="new tags (replace all tags; {} clears them)")


class VersionCreate(BaseModel):
    """POST /registered-models/{name}/versions body: register a model as the name's next version."""

    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        json_schema_extra={
            "examples": [{"model_id": "model_0123456789abcdef0123456789abcdef", "aliases": ["candidate"]}]
        },
    )

    model_id: str = Field(
        min_length=1, max_length=200, description="the model: an id, or a reference such as name@alias or name/3"
    )
    description: str | None = Field(default=None, max_length=5000, description="what this version is")
    tags: Tags = Field(default_factory=dict, description="flat string → string labels of this version")
    allow_not_promoted: bool = Field(
        default=False, description="allow `aliases` to point at a model its merge job's gate marked not_promoted"
    )
    aliases: list[str] = Field(
        default_factory=list, max_length=20, description="aliases to point at the new version in the same step"
    )


class VersionUpdate(BaseModel):
    """PATCH body for a version: fields that are present replace the stored ones."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"tags": {"validated": "yes"}}]})

    description: str | None = Field(default=None, max_length=5000, description="new description ('' clears it)")
    tags: Tags | None = Field(default=None, description="new tags (replace all tags)")


class AliasSet(BaseModel):
    """PUT /registered-models/{name}/aliases/{alias} body: the version the alias should point at."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 1}]})

    version: int = Field(ge=1, description="an existing version number of this registered model")
    allow_not_promoted: bool = Field(
        default=False,
        description="point the alias at a model that its merge job's promotion gate marked not_promoted "
        "(refused with 409 otherwise)",
    )


class VersionOut(BaseModel):
    """One version of a registered model."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="the registered model's name")
    version: int = Field(description="version number (1, 2, …; never reused)")
    model_id: str = Field(description="the models row this version points at")
    ref: str = Field(description="a model reference for this version, usable as model_id in POST /predict")
    description: str | None = Field(default=None, description="what this version is")
    tags: Tags = Field(default_factory=dict, description="labels of this version")
    aliases: list[str] = Field(default_factory=list, description="aliases pointing at this version now")
    created_by: str | None = Field(default=None, description="name of the API key that registered it")
    created_at: datetime | None = Field(default=None, description="when it was registered (UTC)")


class RegisteredModelOut(BaseModel):
    """A registered name with its versions and aliases."""

    id: str = Field(description="internal id of the name")
    name: str = Field(description="the registered name")
    description: str | None = Field(default=None, description="free text")
    tags: Tags = Field(default_factory=dict, description="labels")
    aliases: dict[str, int] = Field(default_factory=dict, description="alias → version it points at")
    versions: list[VersionOut] = Field(default_factory=list, description="every version, oldest first")
    created_at: datetime | None = Field(default=None, description="when the name was created (UTC)")
    updated_at: datetime | None = Field(default=None, description="last change of the name, its tags or aliases")


class RegisteredModelList(BaseModel):
    """A page of registered names, sorted by name."""

    items: list[RegisteredModelOut] = Field(description="this page")
    total: int = Field(description="names in all")
    limit: int = Field(description="page size asked for")
    offset: int = Field(description="rows skipped")


class AliasOut(BaseModel):
    """Where an alias points (after a PUT: also where it pointed before)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="the registered model's name")
    alias: str = Field(description="the alias")
    version: int = Field(description="version it points at")
    previous_version: int | None = Field(default=None, description="version it pointed at before this change")
    model_id: str = Field(description="the models row of that version")
    updated_by: str | None = Field(default=None, description="name of the API key that last moved it")
    updated_at: datetime | None = Field(default=None, description="when it last moved (UTC)")


class AliasEventOut(BaseModel):
    """One recorded change of an alias (to_version null = the alias was deleted)."""

    name: str = Field(description="the registered model's name")
    alias: str = Field(description="the alias that changed")
    from_version: int | None = Field(default=None, description="version before (null: the alias was created)")
    to_version: int | None = Field(default=None, description="version after (null: the alias was deleted)")
    actor_key_id: str | None = Field(default=None, description="id of the API key that made the change")
    actor: str | None = Field(default=None, description="name of that key (or 'cli:<user>' for the steph CLI)")
    at: datetime = Field(description="when (UTC)")


class AliasHistory(BaseModel):
    """Recorded alias changes of a registered model, oldest first (or newest first with ?order=desc), one page."""

    items: list[AliasEventOut] = Field(description="the changes, in the requested order")
    total: int = Field(description="every matching change (all pages)")
    limit: int | None = Field(default=None, description="the page size asked for (null: every change)")
    offset: int = Field(default=0, description="changes skipped before this page")
