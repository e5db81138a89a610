"""Class 5b (issue 8): /metrics label sets are bounded — unknown HTTP methods collapse to OTHER and unknown paths
to <unmatched> — so 3,000 requests with random method names and paths (no key needed) do not grow the
registry."""

from __future__ import annotations

import random
import string

import pytest

from tests.api.conftest import admin, client, settings  # noqa: F401


def _series(app) -> set[tuple[str, tuple]]:
    """Every (sample name, labels) the app's request metrics hold."""
    out = set()
    for family in app.state.metrics.registry.collect():
        if family.name.startswith("steph_http"):
            for sample in family.samples:
                out.add((sample.name, tuple(sorted(sample.labels.items()))))
    return out


def _random_requests(client, n: int, rng: random.Random) -> None:  # noqa: F811
    for _ in range(n):
        method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
        path = rng.choice(["/bases", "/health/live", "/nope/" + "".join(rng.choices(string.ascii_lowercase, k=12))])
        client.request(method, path)


@pytest.mark.parametrize("n", [300, pytest.param(3000, marks=pytest.mark.slow)])
def test_random_methods_and_paths_do_not_grow_the_metrics(client, admin, n):  # noqa: F811
    rng = random.Random(8)
    _random_requests(client, 50, rng)  # every collapsed label combination exists after this
    before = _series(client.app)
    _random_requests(client, n, rng)
    after = _series(client.app)
    assert after == before, sorted(after - before)[:5]
    methods = {dict(labels)["method"] for _, labels in after if "method" in dict(labels)}
    routes = {dict(labels)["route"] for _, labels in after if "route" in dict(labels)}
    assert methods == {"OTHER"}, methods
    assert routes <= {"/bases", "/health/live", "<unmatched>"}, routes
    text = client.get("/metrics", headers=admin).text
    assert 'method="OTHER"' in text and 'route="<unmatched>"' in text
    assert len(text) < 200_000  # bounded: the report stays small (unbounded labels made it megabytes)


def test_known_methods_keep_their_label(client, admin):  # noqa: F811
    client.get("/bases", headers=admin)
    client.delete("/checkpoints/ckpt_missing", headers=admin)
    series = _series(client.app)
    labels = [dict(lab) for _, lab in series]
    assert {"method": "GET", "route": "/bases", "status": "200"}.items() <= next(
        lab for lab in labels if lab.get("route") == "/bases" and lab.get("method") == "GET"
    ).items()
    assert any(lab.get("method") == "DELETE" and lab.get("route") == "/checkpoints/{checkpoint_id}" for lab in labels)
