"""The OpenAPI document, walked generically (routes added by anyone are covered): every operation is described
and documents its auth errors, every field and parameter has a description, every JSON request body has an
example, and every example is accepted by its route when sent (no 400/422)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

ERROR_STATUSES = {"400", "401", "403", "404", "409", "413", "415", "422", "500", "503", "507"}


@pytest.fixture
def spec(client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def operations(spec: dict[str, Any]):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method, path, op


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_every_operation_is_described_with_auth_and_error_responses(spec) -> None:
    for method, path, op in operations(spec):
        where = f"{method.upper()} {path}"
        assert op.get("summary") and op.get("description"), where
        assert "Auth:" in op["description"], where
        responses = op["responses"]
        secured = "Auth: none." not in op["description"]
        assert ("401" in responses) == secured, where
        if "with the admin scope" in op["description"]:
            assert "403" in responses, where
        if "{" in path:
            assert "404" in responses, where
        if "multipart/form-data" in op.get("requestBody", {}).get("content", {}):
            assert "413" in responses, where
        for status, entry in responses.items():
            assert entry.get("description"), f"{where} {status}"
            if status in ERROR_STATUSES and (path, status) != ("/health/ready", "503"):  # ready: its own body
                assert "ErrorResponse" in json.dumps(entry), f"{where} {status}: {entry}"
    assert "HTTPValidationError" not in json.dumps(spec), "FastAPI's 422 shape is never sent by this service"


def test_every_field_and_parameter_has_a_description(spec) -> None:
    missing = [
        f"{name}.{field}"
        for name, schema in spec["components"]["schemas"].items()
        for field, prop in (schema.get("properties") or {}).items()
        if not prop.get("description")
    ]
    for method, path, op in operations(spec):
        missing += [f"{method} {path} {p['name']}" for p in op.get("parameters", []) if not p.get("description")]
        for content in op.get("requestBody", {}).get("content", {}).values():
            props = resolve(spec, content["schema"]).get("properties") or {}
            missing += [f"{method} {path} body.{f}" for f, p in props.items() if not p.get("description")]
    assert missing == []


def body_examples(spec: dict[str, Any], content: dict[str, Any]) -> list[Any]:
    schema = resolve(spec, content.get("schema", {}))
    found = list(schema.get("examples") or [])
    found += [e["value"] for e in (content.get("examples") or {}).values() if "value" in e]
    return found + ([content["example"]] if "example" in content else [])


def test_every_json_body_has_examples_and_each_is_accepted(client, admin, spec) -> None:
    sent = 0
    for method, path, op in operations(spec):
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            continue
        examples = body_examples(spec, content)
        assert examples, f"{method.upper()} {path}: no example"
        url = re.sub(r"\{([^}]+)\}", lambda m: "1" if m.group(1) == "version" else "x_missing", path)
        url = url.replace("/aliases/x_missing", "/aliases/champion")
        for example in examples:
            assert "top_k" not in json.dumps(example), "the parameter is called topk"
            r = client.request(method.upper(), url, headers=admin, json=example)
            assert r.status_code not in (400, 422), f"{method.upper()} {path} refused its example: {r.text}"
            sent += 1
    assert sent >= 7  # merge job, cohort path, registry bodies


def test_an_invalid_body_is_refused_so_the_example_check_can_fail(client, admin) -> None:
    r = client.post("/merge-jobs", headers=admin, json={"method": "steph", "base_id": "b", "target_checkpoint_id": "t",
                                                        "cohort_id": "c", "params": {"top_k": 3}})  # fmt: skip
    assert r.status_code == 422 and "top_k" in r.text
