"""HTTP: POST /predict is bounded: past the forward slots and the wait queue it answers 503 server_busy with a
Retry-After header (the one error shape), and serves again once a slot is free."""

from __future__ import annotations

from app.services.admission import Admission
from tests.api.conftest import assert_error
from tests.api.test_predict import files
from tests.fixtures import write_bag


def test_full_queue_answers_503_with_retry_after_then_recovers(client, predict, model_id, tmp_path):  # noqa: F811
    data = write_bag(tmp_path / "caseA.h5", 10, 16, seed=1).read_bytes()
    admission = client.app.state.ctx.extras["admission"] = Admission(slots=1, queue=0, initial_service_s=2.5)
    holder = admission.slot()
    client.portal.call(holder.__aenter__)  # another request holds the only slot
    try:
        busy = client.post("/predict", headers=predict, data={"model_id": model_id}, files=files(("a.h5", data)))
        err = assert_error(busy, 503, "server_busy", contains="STEPH_PREDICT_QUEUE")
        assert busy.headers["Retry-After"] == "3" and "busy" in err["message"]  # ceil(2.5 s · 1 / 1 slot)
        assert admission.rejected == 1
    finally:
        client.portal.call(holder.__aexit__, None, None, None)
    ok = client.post("/predict", headers=predict, data={"model_id": model_id}, files=files(("a.h5", data)))
    assert ok.status_code == 200, ok.text
    assert ok.json()["results"][0]["n_patches"] == 10
    assert (admission.running, admission.waiting, admission.peak_running) == (0, 0, 1)
