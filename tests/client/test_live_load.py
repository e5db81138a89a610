"""The real service under concurrent load (a `steph serve` process, default settings: auto inference dtype):
concurrent clients get exactly the one-at-a-time results, and with more clients than forward slots + queue the
server answers 503 server_busy with Retry-After, the client backs off, and every request still succeeds."""

from __future__ import annotations

import os
import random
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.client import Client
from tests.client.test_live import test_manifest_with_two_slides_per_patient as manifest_two_slides
from tests.fixtures import serve

pytestmark = pytest.mark.slow


def _risks(url: str, key: str, model_id: str, bags, order: list[int]) -> dict[int, tuple]:
    """{bag index: (risk, hazards + source w/λ, source names)} scoring the bags in `order`, one request per bag."""
    out = {}
    with Client(url, key, timeout=60) as client:
        for i in order:
            pred = client.predict_patient(model_id, f"P{i}", [bags[i]])
            weights = tuple(x for s in pred.sources for x in (s.weight, s.lam or 0.0))
            out[i] = (pred.risk, tuple(pred.raw["hazards"]) + weights, tuple(s.cancer for s in pred.sources))
    return out


def _concurrent(url: str, key: str, model_id: str, bags, clients: int, rounds: int = 2) -> list[dict[int, tuple]]:
    start = threading.Barrier(clients)

    def one(c: int) -> dict[int, tuple]:
        order = [i for _ in range(rounds) for i in random.Random(c).sample(range(len(bags)), len(bags))]
        start.wait()
        return _risks(url, key, model_id, bags, order)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(clients)))


def test_concurrent_clients_get_the_one_at_a_time_results(live):
    bags = live.score_bags
    expected = _risks(live.url, live.predict_key, live.model_id, bags, list(range(len(bags))))
    assert len({round(v[0], 6) for v in expected.values()}) > len(bags) // 2  # the bags really differ
    for got in _concurrent(live.url, live.predict_key, live.model_id, bags, clients=8):
        assert got.keys() == expected.keys()
        for i, value in got.items():
            assert value[0] == pytest.approx(expected[i][0], abs=1e-6), i
            assert value[1] == pytest.approx(expected[i][1], abs=1e-6) and value[2] == expected[i][2], i


def test_more_clients_than_slots_back_off_on_503_and_all_succeed(live, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(live.home, home)  # the same models in a second server with 1 slot and a 1-deep queue
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPH_")}
    env.update(STEPH_HOME=str(home), STEPH_PREDICT_CONCURRENCY="1", STEPH_PREDICT_QUEUE="1")
    bags = live.score_bags
    expected = _risks(live.url, live.predict_key, live.model_id, bags, list(range(len(bags))))
    log = tmp_path / "server.log"
    with serve(env, tmp_path, log) as (url, _proc):
        results = _concurrent(url, live.predict_key, live.model_id, bags, clients=6, rounds=1)
    for got in results:
        assert {i: v[0] for i, v in got.items()} == pytest.approx({i: v[0] for i, v in expected.items()}, abs=1e-6)
    served = log.read_text()
    # the SDK sends one bag as the raw body of POST /predict/bag (query string in the access log)
    assert len(re.findall(r'"POST /predict/bag\?\S* HTTP/1.1" 503', served)) >= 1, "the server never pushed back"
    assert len(re.findall(r'"POST /predict/bag\?\S* HTTP/1.1" 200', served)) == 6 * len(bags)


@pytest.mark.parametrize("repeat", range(int(os.environ.get("STEPH_TEST_REPEAT", "0"))))
def test_manifest_with_two_slides_per_patient_repeated(live, tmp_path, repeat):
    """Opt-in stability check of the once-flaky client test: STEPH_TEST_REPEAT=20 runs it 20 times in a row."""
    manifest_two_slides(live, tmp_path)
