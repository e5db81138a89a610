"""The web UI under /ui: server-rendered pages (Jinja2), same API keys as the JSON API.

The key is entered once on /ui/login and kept in an HttpOnly, SameSite=Strict cookie scoped to /ui (never in a
URL, never readable by scripts). Forms that change something carry a CSRF token derived from the key. Pages
that list bases, checkpoints, cohorts and jobs need an admin key; models and reports a predict key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from app.api.deps import Ctx
from app.services import auth
from app.services.errors import Forbidden, ServiceError, Unauthorized, UnprocessableInput
from app.ui import views

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(views.__file__).with_name("templates")))
COOKIE = "steph_ui_key"


def _key(request: Request) -> str | None:
    return request.cookies.get(COOKIE)


def csrf_token(key: str) -> str:
    """A per-key token for the UI's forms: HMAC-SHA256(key, 'steph-ui-csrf')."""
    return hmac.new(key.encode(), b"steph-ui-csrf", hashlib.sha256).hexdigest()[:32]


def _scope(ctx: Any, key: str | None) -> str | None:
    """The key's scope ('admin' / 'predict'), or None when it is missing, unknown or revoked."""
    try:
        with ctx.session() as s:
            return auth.authenticate(s, key=key, required_scope="predict").scope
    except (Unauthorized, Forbidden):
        return None


def _login_redirect(*, clear: bool = False) -> RedirectResponse:
    """To the login page; `clear` drops the session cookie (logout, or a key that is no longer valid). A request
    that simply carried no cookie keeps whatever the browser has."""
    response = RedirectResponse("/ui/login", status_code=303)
    if clear:
        response.delete_cookie(COOKIE, path="/ui")
    return response


def _cross_site(request: Request) -> bool:
    """True for a browser POST sent from another site (its Origin, or else its Referer, names another host):
    login and logout refuse those, so no other page can log a user in with a key of its choosing or out."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source == "null"
    return urlsplit(source).netloc.lower() != (request.headers.get("host") or request.url.netloc).lower()


def _cross_site_page(request: Request) -> Response:
    message = "This form was sent from another site; open the STEPH page itself and submit it there."
    return templates.TemplateResponse(request, "error.html", {"nav": "error", "message": message}, status_code=403)


def _render(request: Request, ctx: Any, template: str, admin: bool, **context: Any) -> Response:
    """The page, or a redirect to /ui/login without a valid key, or a 403 page for a predict key on admin pages."""
    key = _key(request)
    scope = _scope(ctx, key)
    if scope is None or key is None:
        return _login_redirect(clear=key is not None)
    base = {"scope": scope, "csrf": csrf_token(key), "nav": template.split(".")[0]}
    if admin and scope != "admin":
        msg = "This page needs an admin key. Log out and enter an admin key (create one with `steph keys create`)."
        return templates.TemplateResponse(request, "error.html", {**base, "message": msg}, status_code=403)
    try:
        values = {k: (v() if callable(v) else v) for k, v in context.items()}
    except ServiceError as exc:
        return _error_page(request, base, exc)
    return templates.TemplateResponse(request, template, {**base, **values})


def _error_page(request: Request, base: dict[str, Any], exc: ServiceError) -> Response:
    """The UI's error page for a service error, with the status the API would answer."""
    from app.api.errors import classify

    status = (classify(exc) or (422, ""))[0]
    return templates.TemplateResponse(request, "error.html", {**base, "message": str(exc)}, status_code=status)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"nav": "login", "error": None})


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, ctx: Ctx, key: Annotated[str, Form(max_length=200)]) -> Response:
    if _cross_site(request):
        return _cross_site_page(request)
    key = key.strip()
    if _scope(ctx, key) is None:
        ctx_ = {"nav": "login", "error": "That key is not valid (unknown or revoked). Check it and try again."}
        return templates.TemplateResponse(request, "login.html", ctx_)  # the form again, with the message
    response = RedirectResponse("/ui", status_code=303)
    # Lax: sent on a top-level navigation from another site (a link in a mail opens the page), never on another
    # site's POST or sub-request; the UI's one state-changing form also carries a CSRF token
    response.set_cookie(COOKIE, key, httponly=True, samesite="lax", path="/ui",
                        secure=request.url.scheme == "https")  # fmt: skip
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    if _cross_site(request):
        return _cross_site_page(request)
    return _login_redirect(clear=True)


@router.get("", response_class=HTMLResponse)
def overview(request: Request, ctx: Ctx) -> Response:
    admin = _scope(ctx, _key(request)) == "admin"
    return _render(request, ctx, "overview.html", False, jobs=lambda: views.jobs(ctx)[:10] if admin else None,
                   models=lambda: views.models(ctx)[:10])  # fmt: skip


@router.get("/bases", response_class=HTMLResponse)
def bases_page(request: Request, ctx: Ctx) -> Response:
    return _render(request, ctx, "bases.html", True, rows=lambda: views.bases(ctx))


@router.get("/checkpoints", response_class=HTMLResponse)
def checkpoints_page(request: Request, ctx: Ctx) -> Response:
    return _render(request, ctx, "checkpoints.html", True, rows=lambda: views.checkpoints(ctx))


@router.get("/cohorts", response_class=HTMLResponse)
def cohorts_page(request: Request, ctx: Ctx) -> Response:
    return _render(request, ctx, "cohorts.html", True, rows=lambda: views.cohorts(ctx))


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, ctx: Ctx) -> Response:
    return _render(request, ctx, "jobs.html", True, rows=lambda: views.jobs(ctx))


@router.get("/jobs/new", response_class=HTMLResponse)
def new_job_page(request: Request, ctx: Ctx) -> Response:
    return _render(request, ctx, "new_job.html", True, form=lambda: views.new_job_form(ctx), error=None)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, ctx: Ctx, job_id: str) -> Response:
    return _render(request, ctx, "job.html", True, job=lambda: views.job(ctx, job_id))


@router.get("/jobs/{job_id}/progress")
def job_progress(request: Request, ctx: Ctx, job_id: str) -> Response:
    """JSON for the pages' progress bars (polled every second while a job runs)."""
    if _scope(ctx, _key(request)) != "admin":
        return JSONResponse({"error": {"code": "unauthorized", "message": "log in with an admin key"}}, 401)
    from app.services.merge_jobs import get_job

    try:
        return JSONResponse(views.progress_of(get_job(ctx=ctx, job_id=job_id)))
    except ServiceError as exc:
        return JSONResponse({"error": {"code": "not_found", "message": str(exc)}}, 404)


@router.post("/jobs", response_class=HTMLResponse)
async def submit_job(request: Request, ctx: Ctx) -> Response:
    """The form's POST: CSRF token checked, then the same service as POST /merge-jobs; redirects to the job."""
    form = await request.form()
    key = _key(request)
    scope = _scope(ctx, key)
    if key is None or scope is None:
        return _login_redirect(clear=key is not None)
    msg = None
    if not hmac.compare_digest(str(form.get("csrf", "")), csrf_token(key)):
        msg = "This form was not sent from this service's page (CSRF check failed): reload the page and try again."
    elif scope != "admin":
        msg = "Starting a merge job needs an admin key. Log out and enter an admin key."
    if msg is not None:
        base = {"scope": scope, "csrf": csrf_token(key), "nav": "error", "message": msg}
        return templates.TemplateResponse(request, "error.html", base, status_code=403)
    return await run_in_threadpool(_submit, request, ctx, form)


def _submit(request: Request, ctx: Any, form: Any) -> Response:
    from app.services.merge_jobs import submit_merge_job

    try:
        params = json.loads(str(form.get("params") or "{}"))
        if not isinstance(params, dict):
            raise ValueError('parameters must be a JSON object such as {"epochs": 5}')
        sources = [str(s) for s in form.getlist("source_checkpoint_ids")] or None
        body = {k: str(form.get(k, "")) for k in ("method", "base_id", "target_checkpoint_id", "cohort_id")}
        job, _ = submit_merge_job(ctx=ctx, request={**body, "source_checkpoint_ids": sources, "params": params})
    except (ValueError, ServiceError) as exc:
        message = f"parameters are not valid JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        sent = {"method": str(form.get("method", "")), "base_id": str(form.get("base_id", "")),
                "target_checkpoint_id": str(form.get("target_checkpoint_id", "")),
                "cohort_id": str(form.get("cohort_id", "")), "params": str(form.get("params") or ""),
                "source_checkpoint_ids": [str(x) for x in form.getlist("source_checkpoint_ids")]}  # fmt: skip
        page = _render(request, ctx, "new_job.html", True, form=lambda: views.new_job_form(ctx, sent), error=message)
        if page.status_code == 200:
            page.status_code = 422  # the form again, as it was sent, with the message
        return page
    return RedirectResponse(f"/ui/jobs/{job['id']}", status_code=303)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, ctx: Ctx) -> Response:
    return _render(request, ctx, "models.html", False, rows=lambda: views.models(ctx))


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(
    request: Request, ctx: Ctx, model_id: str, groups: Annotated[int, Query()] = 2,
    patient: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:  # fmt: skip
    from app.services.reports import check_groups, report_inputs

    def held_out() -> dict[str, Any]:
        """The held-out patients for the figures, or why there are none (the page shows the rest anyway)."""
        try:
            ids = report_inputs(ctx, model_id)[0]["test"]["patient_ids"]
        except UnprocessableInput as exc:
            return {"ids": [], "missing": str(exc)}
        if patient is not None and patient not in ids:
            raise UnprocessableInput(f"patient {patient!r} is not among this model's held-out patients")
        return {"ids": ids, "missing": None}

    return _render(request, ctx, "model.html", False, model=lambda: views.model(ctx, model_id),
                   groups=lambda: check_groups(groups), patient=patient, held_out=held_out)  # fmt: skip


@router.get("/models/{model_id}/report", response_class=HTMLResponse)
def model_report(
    request: Request, ctx: Ctx, model_id: str, groups: Annotated[int, Query()] = 2,
    patient: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:  # fmt: skip
    from app.api.routes.reports import REPORT_HEADERS
    from app.services.reports import model_report_html

    key = _key(request)
    scope = _scope(ctx, key)
    if scope is None or key is None:
        return _login_redirect(clear=key is not None)
    try:
        html = model_report_html(ctx=ctx, model_id=model_id, n_groups=groups, patient=patient)
    except ServiceError as exc:  # the UI's error page (the API route answers JSON)
        return _error_page(request, {"scope": scope, "csrf": csrf_token(key), "nav": "error"}, exc)
    return HTMLResponse(html, headers=REPORT_HEADERS)


@router.get("/models/{model_id}/figures/{name}.{fmt}")
def model_figure(
    request: Request, ctx: Ctx, model_id: str, name: str, fmt: str, groups: Annotated[int, Query()] = 2,
    patient: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:  # fmt: skip
    from app.api.routes.reports import MEDIA
    from app.services.reports import model_figure as figure

    if _scope(ctx, _key(request)) is None:
        return Response(status_code=401)
    body = figure(ctx=ctx, model_id=model_id, name=name, fmt=fmt, n_groups=groups, patient=patient)
    return Response(body, media_type=MEDIA[fmt], headers={"Cache-Control": "private, max-age=300"})
