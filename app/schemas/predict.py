"""Response models for POST /predict."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SurvivalCurve(BaseModel):
    times_days: list[float]  # bin edges 0, 365, …: S(t) holds from each edge to the next
    probabilities: list[float]  # S at times_days (S(0) = 1)


class SourceUse(BaseModel):
    cancer: str
    weight: float
    lam: float | None = None


class TopPatch(BaseModel):
    index: int  # row in the patient's concatenated bag
    file: str  # upload the patch came from
    file_index: int  # row inside that file
    attention: float
    coords: list[int] | None = None


class PatientResult(BaseModel):
    patient_id: str
    files: list[str]
    n_patches: int
    risk: float
    survival: SurvivalCurve
    hazards: list[float]
    sources: list[SourceUse] | None = None
    top_patches: list[TopPatch] | None = None


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_id: str
    model_sha256: str
    method: str
    results: list[PatientResult]
