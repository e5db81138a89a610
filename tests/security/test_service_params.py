"""Class 5e (issue 8): merge parameters, list offsets and base settings have documented ranges, checked at
submission: a 422 naming the parameter and its range, and nothing stored (no job row, no object)."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import admin, assert_error, client, ctx, family, settings, snapshot, upload, world  # noqa: F401
from tests.workers.api_helpers import job_body, register_cohort


@pytest.fixture
def cohort(client, admin, world, family) -> dict:  # noqa: F811
    return register_cohort(client, admin, world, family["base"]["id"])


BAD_PARAMS = [
    ({"epochs": 10**9}, ("epochs", "10000")),
    ({"epochs": 0}, ("epochs",)),
    ({"seed": 2**80}, ("seed", "2**63")),
    ({"seed": -1}, ("seed", "2**63")),
    ({"lr": 0}, ("lr",)),
    ({"lr": 1e6}, ("lr", "10")),
    ({"accum": 10**6}, ("accum", "4096")),
    ({"max_patches": 10**12}, ("max_patches",)),
    ({"hyper_hidden": 6000}, ("hyper_hidden", "2048")),
    ({"topk": 10**6}, ("topk", "4096")),
    ({"gamma": "NaN"}, ("gamma", "finite")),
    ({"beta": "Infinity"}, ("beta", "finite")),
    ({"gamma": -1e-3}, ("gamma",)),
    ({"lr": "NaN"}, ("lr",)),
]


def _post_raw(client, admin, body: dict):  # noqa: F811
    """POST /merge-jobs with "NaN" / "Infinity" strings turned into the bare JSON tokens Python's parser accepts."""
    text = json.dumps(body).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    return client.post("/merge-jobs", headers={**admin, "Content-Type": "application/json"}, content=text)


def test_out_of_range_merge_params_are_422_and_store_nothing(client, admin, ctx, family, cohort):  # noqa: F811
    before = snapshot(ctx)
    for params, needles in BAD_PARAMS:
        r = _post_raw(client, admin, job_body(family, cohort["id"], params={"epochs": 1, **params}))
        assert r.status_code == 422, (params, r.text)
        assert_error(r, 422, contains=needles)
    assert snapshot(ctx) == before
    assert client.get("/merge-jobs", headers=admin).json()["total"] == 0


def test_routing_and_learned_bounds(client, admin, ctx, family, cohort):  # noqa: F811
    for method, params, needle in (("routing", {"balance_coef": "NaN"}, "balance_coef"),
                                   ("learned_weights", {"topk": 99999}, "topk")):  # fmt: skip
        r = _post_raw(client, admin, job_body(family, cohort["id"], method=method, params={"epochs": 1, **params}))
        assert_error(r, 422, contains=needle)


def test_in_range_params_are_accepted(client, admin, family, cohort):  # noqa: F811
    """The bounds are not too tight: the edges of the documented ranges are accepted."""
    params = {"epochs": 1, "seed": 2**63 - 1, "hyper_hidden": 8, "topk": 2, "gamma": 0.0, "beta": 0.0, "accum": 4096}
    r = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"], params=params))
    assert r.status_code == 202, r.text


def test_huge_or_negative_offsets_are_422(client, admin):  # noqa: F811
    for route in ("/bases", "/checkpoints", "/cohorts", "/merge-jobs", "/models"):
        for offset in (2**63, 2**64 + 5, 10**9 + 1, -1):
            r = client.get(route, headers=admin, params={"offset": offset})
            assert_error(r, 422, "validation_error", contains="offset")


def test_largest_offset_is_fine(client, admin):  # noqa: F811
    r = client.get("/bases", headers=admin, params={"offset": 10**9})
    assert r.status_code == 200 and r.json()["items"] == []


def test_bin_width_days_out_of_range_is_422(client, admin, ctx, world):  # noqa: F811
    before = snapshot(ctx)
    for width in ("5e-324", "0.5", "1e9", "nan", "inf"):
        r = client.post("/bases", headers=admin, files=upload(world.base),
                        data={"name": "b", "encoder": "e", "bin_width_days": width})  # fmt: skip
        assert_error(r, 422, contains="bin_width_days")
    assert snapshot(ctx) == before
