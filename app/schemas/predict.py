"""Response models for POST /predict."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SurvivalCurve(BaseModel):
    times_days: list[float] = Field(
        description="days of the bin edges 0, 365, …: S(t) holds from each edge to the next"
    )
    probabilities: list[float] = Field(description="survival S at times_days; S(0) = 1")


class SourceUse(BaseModel):
    cancer: str = Field(description="source cancer")
    weight: float = Field(description="merge weight w_i the hypernetwork gave it for this bag")
    lam: float | None = Field(default=None, description="mixup ratio λ_i (share of the target's task vector)")


class EnsembleMember(BaseModel):
    name: str = Field(description="'main' (the merged model) or a source cancer")
    z: float = Field(description="its risk for this patient, standardised on the target's train patients")
    weight: float = Field(description="its weight in the combined score")


class EnsembleUse(BaseModel):
    score: float = Field(description="combined score s = Σ weight · z (the curve is b + γ s; higher = worse)")
    members: list[EnsembleMember] = Field(description="every member's standardised risk and weight")


class TopPatch(BaseModel):
    index: int = Field(description="row in the patient's concatenated bag")
    file: str = Field(description="upload the patch came from")
    file_index: int = Field(description="row inside that file")
    attention: float = Field(description="attention weight (sums to 1 over the bag)")
    coords: list[int] | None = Field(default=None, description="patch coordinates from the bag file, when it has them")


class CurveImage(BaseModel):  # issue 10
    format: str = Field(description="png or svg")
    media_type: str = Field(description="image/png or image/svg+xml")
    data: str = Field(description="the image, base64-encoded (e.g. for a data: URI)")


class PatientResult(BaseModel):
    patient_id: str = Field(description="patient id (file stem unless given)")
    files: list[str] = Field(description="the uploads pooled for this patient")
    n_patches: int = Field(description="patches in the pooled bag")
    risk: float = Field(description="risk score −Σ_j S_j (higher = worse prognosis)")
    survival: SurvivalCurve = Field(description="survival curve at the bin edges")
    hazards: list[float] = Field(description="discrete-time hazard per bin")
    sources: list[SourceUse] | None = Field(
        default=None, description="STEPH: the sources merged for this patient (weights and λ)"
    )
    ensemble: EnsembleUse | None = Field(
        default=None, description="ensemble models: the combined score and every member's standardised risk"
    )
    top_patches: list[TopPatch] | None = Field(
        default=None, description="the highest-attention patches (when top_patches > 0)"
    )
    curve_image: CurveImage | None = Field(
        default=None, description="the survival curve as an image (when curve_image = png or svg)"
    )  # issue 10


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_id: str = Field(description="the model that scored (a reference resolves to this id)")
    model_sha256: str = Field(description="sha256 of its artifact")
    method: str = Field(description="its merge method")
    model_type: str | None = Field(
        default=None,
        description="what scores each bag: the artifact's model type (for method 'auto', the winner's: steph, "
        "ensemble — the main model plus every source's, M + 1 models per bag — or cancer_specific)",
    )
    promotion_status: str | None = Field(
        default=None,
        description="the merge job's promotion gate for this model: promoted | not_promoted | unchecked (a model "
        "scored by id or name/version may be one the gate did not promote; aliases need allow_not_promoted)",
    )
    results: list[PatientResult] = Field(description="one result per patient")


class PredictPathsRequest(BaseModel):
    """POST /predict/paths: bag files already on the server, under STEPH_DATA_ROOT (issue 7: no upload)."""

    model_config = ConfigDict(
        protected_namespaces=(),
        extra="forbid",
        json_schema_extra={
            "examples": [{"model_id": "brca@champion", "paths": ["brca/features/TCGA-A1-0001.h5"], "top_patches": 3}]
        },
    )

    model_id: str = Field(max_length=200, description="the model: an id, name@alias, name/version or name/latest")
    paths: list[str] = Field(
        min_length=1, description="bag files, absolute or relative to STEPH_DATA_ROOT (links followed, confined)"
    )
    patient_id: str | None = Field(default=None, max_length=200, description="one id for all files (one patient)")
    patient_ids: list[str] | None = Field(default=None, description="alternative: one patient id per file")
    top_patches: int = Field(default=0, ge=0, le=1000, description="return the k highest-attention patches")
    curve_image: Literal["png", "svg"] | None = Field(
        default=None, description="also return each survival curve as a base64 png/svg image"
    )
