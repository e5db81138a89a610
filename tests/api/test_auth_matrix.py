"""The auth matrix over EVERY route of the app (jobs/models/predict included when present): no key → 401 (+
WWW-Authenticate: Bearer), unknown/revoked key → 401, predict key on admin routes → 403, the right scope →
neither 401 nor 403. Scopes are read from each route's dependencies."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute

from app.api.deps import AUTH_DEPENDENCIES
from app.main import ROUTERS
from app.services.auth import create_api_key, revoke_api_key
from tests.api.conftest import assert_error

PUBLIC = {"/health/live", "/health/ready"}


def _scope(dependant) -> str | None:
    """'admin' / 'predict' when the route depends (directly or not) on require_admin / require_predict."""
    stack, found = [dependant], set()
    while stack:
        d = stack.pop()
        if d.call in AUTH_DEPENDENCIES:
            found.add(AUTH_DEPENDENCIES[d.call])
        stack.extend(d.dependencies)
    return "admin" if "admin" in found else ("predict" if found else None)


def all_routes() -> list[tuple[str, str, str | None]]:
    """(method, path, scope) for every API route of every router module that exists."""
    out = []
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:  # the /ui pages: test_ui_pages_need_a_login
                out += [(m, route.path, _scope(route.dependant)) for m in sorted(route.methods) if m != "HEAD"]
    return out


ROUTES = all_routes()


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x_missing", path)


def test_every_route_is_covered_and_protected(client):
    schema_ops = {(m.upper(), p) for p, ops in client.app.openapi()["paths"].items() for m in ops}
    assert schema_ops == {(m, p) for m, p, _ in ROUTES}, "a route escaped the matrix"
    for method, path, scope in ROUTES:
        assert (scope is None) == (path in PUBLIC), f"{method} {path} has scope {scope}"
    paths = {p for _, p, _ in ROUTES}
    assert {"/bases", "/checkpoints/{checkpoint_id}", "/cohorts", "/methods", "/metrics"} <= paths


@pytest.mark.parametrize(
    "method, path, scope",
    [r for r in ROUTES if r[2] is not None],
    ids=[f"{m} {p}" for m, p, s in ROUTES if s is not None],
)
def test_auth_matrix(client, admin, predict, ctx, method, path, scope):
    url = _url(path)
    r = client.request(method, url)
    assert_error(r, 401, "unauthorized", contains="Authorization: Bearer")
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.request(method, url, headers={"Authorization": "Bearer steph_admin_not-a-real-key"})
    assert_error(r, 401, "unauthorized", contains="invalid")
    r = client.request(method, url, headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert r.status_code == 401
    r = client.request(method, url, headers=predict)
    if scope == "admin":
        assert_error(r, 403, "forbidden", contains=("'predict'", "'admin'"))
    else:
        assert r.status_code not in (401, 403), r.text
    r = client.request(method, url, headers=admin)
    assert r.status_code not in (401, 403), r.text


def ui_routes() -> list[tuple[str, str]]:
    return [
        (m, r.path)
        for router in ROUTERS
        for r in router.routes
        if isinstance(r, APIRoute) and not r.include_in_schema
        for m in sorted(r.methods)
        if m != "HEAD"
    ]


def test_ui_pages_need_a_login(client):
    """Every /ui page without the session cookie goes to the login form; every /ui form post but login/logout is
    refused before its body is read (a 303 to the login form), and /ui bodies are capped at 64 KiB even with a
    valid login."""
    routes = ui_routes()
    assert ("GET", "/ui/jobs") in routes and ("POST", "/ui/jobs") in routes
    for method, path in routes:
        url = _url(path).replace("{name}.{fmt}", "km.png")
        if path in ("/ui/login", "/ui/logout"):
            continue
        if method == "GET":
            r = client.get(url, follow_redirects=False)
            if path.endswith(("/progress", "{fmt}")):  # fetched by the page (JSON, images): a 401, not a redirect
                assert r.status_code == 401, (path, r.status_code)
            else:
                assert r.status_code == 303 and r.headers["location"] == "/ui/login", (path, r.status_code)
        else:
            form = {"content-type": "application/x-www-form-urlencoded"}
            r = client.request(method, url, content=b"a=" + b"x" * 100, headers=form, follow_redirects=False)
            # refused before the body (no key), and the browser is sent to the login page, not shown JSON
            assert r.status_code == 303 and r.headers["location"] == "/ui/login", (path, r.status_code)
            assert r.headers["connection"] == "close"


def test_ui_form_posts_are_authenticated_before_the_body_and_capped(client, admin, predict):
    huge = {"content-type": "application/x-www-form-urlencoded", "content-length": str(1 << 30)}

    def body():  # an upload that would take long to send: the server must answer without reading it
        yield b"a=1"
        raise AssertionError("the body was read")

    r = client.post("/ui/jobs", content=body(), headers=huge, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    client.cookies.set("steph_ui_key", predict["Authorization"].split()[1], path="/ui")
    r = client.post("/ui/jobs", content=body(), headers=huge, follow_redirects=False)
    assert r.status_code == 413  # logged in: the 64 KiB cap applies before the body is read
    client.cookies.clear()
    client.cookies.set("steph_ui_key", admin["Authorization"].split()[1], path="/ui")
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = client.post("/ui/jobs", content=b"a=" + b"x" * (70 << 10), headers=form, follow_redirects=False)
    assert r.status_code == 413, r.text
    client.cookies.clear()
    r = client.post("/ui/login", content=b"key=" + b"x" * (70 << 10), headers=form, follow_redirects=False)
    assert r.status_code == 413


def test_public_routes_need_no_key(client):
    for path in sorted(PUBLIC):
        assert client.get(path).status_code == 200


def test_revoked_key_is_401(client, ctx):
    with ctx.session() as s:
        row, key = create_api_key(s, scope="admin", name="temp")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/bases", headers=headers).status_code == 200
    with ctx.session() as s:
        revoke_api_key(s, id_or_prefix=row.id)
    assert_error(client.get("/bases", headers=headers), 401, "unauthorized", contains="revoked")
