"""Model reports: GET /models/{id}/report (self-contained HTML), /models/{id}/report/figures/{name}.{png|svg}
and /models/{id}/report/data (the plotted numbers as JSON). Predict or admin scope; `cohort_id` (another cohort's
labels) admin only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, Response

from app.api.deps import Ctx, PredictKey
from app.schemas.common import error_responses, json_error_responses
from app.services import reports as svc
from app.services.errors import Forbidden

router = APIRouter(prefix="/models", tags=["reports"])

Groups = Annotated[int, Query(description="risk groups: 2 = median split, 3 = tertiles, 4 = quartiles")]
Patient = Annotated[str | None, Query(max_length=200, description="held-out patient id for the patient figure")]
FigureName = Annotated[
    str, Path(description="figure: km, calibration, time-metrics, comparison, sources, training or patient")
]
FigureFormat = Annotated[str, Path(description="image format: png or svg")]
CohortId = Annotated[str | None, Query(max_length=64, description="cohort to report on (default: the job's)")]
MEDIA = {"png": "image/png", "svg": "image/svg+xml"}


def _cohort_scope(key: Any, cohort_id: str | None) -> str | None:
    """A report on another cohort reads that cohort's outcome labels: admin keys only (a predict key may not
    read cohorts: 403, before anything about the cohort is looked up). Without cohort_id, the model's own
    held-out split is reported to any key."""
    if cohort_id is not None and getattr(key, "scope", None) != "admin":
        raise Forbidden(
            "cohort_id needs an admin key: reporting on another cohort reveals its outcome labels; "
            "leave cohort_id out to report on the model's own held-out split"
        )
    return cohort_id


REPORT_HEADERS = {
    "Cache-Control": "private, max-age=300",
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
}


@router.get(
    "/{model_id}/report",
    response_class=HTMLResponse,
    responses=json_error_responses(403, 404, 422),
    summary="The model report: KM by risk group, calibration, AUC/Brier over time, C-index comparison, sources",
)
def report(
    ctx: Ctx, _key: PredictKey, model_id: str, groups: Groups = 2, patient: Patient = None, cohort_id: CohortId = None
) -> HTMLResponse:
    cohort_id = _cohort_scope(_key, cohort_id)
    html = svc.model_report_html(ctx=ctx, model_id=model_id, n_groups=groups, patient=patient, cohort_id=cohort_id)
    return HTMLResponse(html, headers=REPORT_HEADERS)


@router.get(
    "/{model_id}/report/figures/{name}.{fmt}",
    response_class=Response,
    responses={
        200: {
            "description": "the figure",
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/svg+xml": {"schema": {"type": "string"}},
            },
        },
        **json_error_responses(403, 404, 422),
    },  # fmt: skip
    summary="One report figure as PNG or SVG (km, calibration, time-metrics, comparison, sources, training, patient)",
)
def figure(
    ctx: Ctx, _key: PredictKey, model_id: str, name: FigureName, fmt: FigureFormat, groups: Groups = 2,
    patient: Patient = None, cohort_id: CohortId = None,
) -> Response:  # fmt: skip
    cohort_id = _cohort_scope(_key, cohort_id)
    body = svc.model_figure(ctx=ctx, model_id=model_id, name=name, fmt=fmt, n_groups=groups, patient=patient,
                            cohort_id=cohort_id)  # fmt: skip
    return Response(body, media_type=MEDIA[fmt], headers={"Cache-Control": "private, max-age=300"})


@router.get(
    "/{model_id}/report/data",
    responses=error_responses(404, 422),
    summary="The numbers behind the report (held-out labels, risks, curves, comparison, sources) as JSON",
)
def report_data(ctx: Ctx, _key: PredictKey, model_id: str, cohort_id: CohortId = None) -> dict[str, Any]:
    data, meta = svc.report_inputs(ctx, model_id, _cohort_scope(_key, cohort_id))
    return {"meta": {k: v for k, v in meta.items() if not k.startswith("_")}, "data": data}
