"""Issue 8 class 2 against a real `steph serve` process: tiny files that declare huge tensors get a 4xx and the
server's peak RSS (VmHWM, /proc/<pid>/status) rises by less than RSS_BOUND_MB; mutated bags never give a 5xx and
leave nothing in the store.

The server runs with STEPH_MAX_PATCHES = 4,000,000 so that, at the tiny family's D = 16, each attack declares a
tensor of 256 MB-1 GiB that passes the patch limit: only the checks of issue 8 stop it.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest
import torch

from app.services import merge_jobs as mj
from app.services.auth import create_api_key
from tests.fixtures import make_tiny_world, serve
from tests.security.test_files_fuzz import BASES, SUFFIX, mutate
from tests.workers.world import job_request, make_ctx, register_family

REPO = Path(__file__).resolve().parents[2]
RSS_BOUND_MB = 64
MAX_PATCHES = 4_000_000
D = 16


@dataclass
class Live:
    url: str
    key: str
    model_id: str
    pid: int
    store: Path

    def predict(self, items: list[tuple[str, bytes]], **data: str) -> httpx.Response:
        files = [("files", (name, payload, "application/octet-stream")) for name, payload in items]
        return httpx.post(
            f"{self.url}/predict",
            headers={"Authorization": f"Bearer {self.key}"},
            data={"model_id": self.model_id, **data},
            files=files,
            timeout=120,
        )

    def hwm_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024


def _prepare(root: Path) -> tuple[Path, str, str]:
    """A home with the tiny family, one STEPH model and a predict key (built in-process, then served)."""
    world = make_tiny_world(root / "world")
    ctx = make_ctx(root, data_root=root)
    try:
        fam = register_family(ctx, world)
        job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
        mj.run_merge_job(ctx=ctx, job_id=job["id"])
        model_id = mj.get_job(ctx=ctx, job_id=job["id"])["model_id"]
        assert model_id, mj.get_job(ctx=ctx, job_id=job["id"])["error"]
        with ctx.session() as s:
            _, key = create_api_key(s, scope="predict", name="security-test")
    finally:
        ctx.close()
    return root / "home", key, model_id


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("files_memory")
    home, key, model_id = _prepare(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPH_")}
    env.update(STEPH_HOME=str(home), STEPH_DATA_ROOT=str(root), STEPH_AUTO_MIGRATE="false",
               STEPH_BOOTSTRAP_ADMIN_KEY="false", STEPH_MAX_PATCHES=str(MAX_PATCHES), STEPH_LOG_LEVEL="WARNING",
               STEPH_DEVICE="cpu", PYTHONPATH=str(REPO))  # fmt: skip
    with serve(env, root, root / "server.log", timeout=120) as (url, proc):
        yield Live(url, key, model_id, proc.pid, home / "models_store")


def _pt(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _deflated_pt(n: int, scratch: Path) -> bytes:
    """torch.save of features [n, D] float32 zeros whose data record is deflated: n*D*4 bytes declared, ~1 MB."""
    plain_path = scratch / "plain.pt"
    torch.save({"features": torch.empty(n, D)}, plain_path)  # untouched pages: no memory, zeros on disk
    out = io.BytesIO()
    with zipfile.ZipFile(plain_path) as plain, zipfile.ZipFile(out, "w") as zout:
        for info in plain.infolist():
            zout.compression = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            with plain.open(info) as src, zout.open(info.filename, "w", force_zip64=True) as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
    plain_path.unlink()
    return out.getvalue()


def _h5(build) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        build(f)
    return buf.getvalue()


def attacks(scratch: Path) -> dict[str, list[tuple[str, bytes]]]:
    n = MAX_PATCHES
    fill = _h5(lambda f: f.create_dataset("features", shape=(600_000, D), dtype="f4", chunks=(100_000, D),
                                          compression="gzip"))  # fmt: skip
    dense = torch.randn(5, D)
    return {
        "stride0.pt": [("stride0.pt", _pt({"features": torch.ones(1, D).expand(n, D)}))],
        "deflated.pt": [("deflated.pt", _deflated_pt(n, scratch))],
        "sparse.pt": [("sparse.pt", _pt({"features": dense.to_sparse()}))],
        "coords.h5": [("coords.h5", _h5(lambda f: (
            f.create_dataset("features", data=np.ones((10, D), np.float32)),
            f.create_dataset("coords", shape=(10**8, 2), dtype="i8", chunks=(10**6, 2), compression="gzip"))))],
        "eight.h5": [(f"s{i}.h5", fill) for i in range(8)],
        "fill.h5": [("fill.h5", fill)],
        "header.npy": [("header.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
                        b"'shape': (4000000, 16), }".ljust(127) + b"\n")],
    }  # fmt: skip


@pytest.mark.slow
def test_tiny_files_declaring_huge_tensors_get_a_4xx_without_memory(live: Live, tmp_path: Path) -> None:
    ok = live.predict([("warm.npy", BASES["npy"])])
    assert ok.status_code == 200, ok.text
    cases = attacks(tmp_path)
    assert cases["deflated.pt"][0][1].__len__() < 2**22 and len(cases["stride0.pt"][0][1]) < 4096
    before = live.hwm_mb()
    statuses = {}
    for label, items in cases.items():
        r = live.predict(items, patient_id="P")
        body = r.json()
        assert 400 <= r.status_code < 500, (label, r.status_code, r.text)
        assert body["error"]["message"] and "/tmp" not in body["error"]["message"], body
        statuses[label] = (r.status_code, body["error"]["message"][:90])
    rise = live.hwm_mb() - before
    print(f"\nserver VmHWM before the attacks {before:.0f} MB, rise {rise:.1f} MB over {len(cases)} attacks")
    for label, (status, message) in statuses.items():
        print(f"  {label:<12} {status} {message}")
    assert rise < RSS_BOUND_MB
    ok = live.predict([("again.npy", BASES["npy"])])  # still alive and serving
    assert ok.status_code == 200


@pytest.mark.slow
def test_mutated_bags_over_http_give_no_5xx_and_store_nothing(live: Live) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    seen: list[int] = []

    @settings(max_examples=int(os.environ.get("STEPH_FUZZ_EXAMPLES", "0")) or 30, deadline=None, derandomize=True,
              database=None, suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(fmt=st.sampled_from(sorted(BASES)), data=st.data())
    def run(fmt: str, data: st.DataObject) -> None:
        payload = data.draw(mutate(BASES[fmt]))
        r = live.predict([(f"m{SUFFIX[fmt]}", payload)])
        seen.append(r.status_code)
        assert r.status_code == 200 or 400 <= r.status_code < 500, (fmt, r.status_code, r.text)
        if r.status_code != 200:
            assert r.json()["error"]["message"]

    run()
    tmp = live.store / "tmp"
    assert not tmp.is_dir() or list(tmp.iterdir()) == []
    assert any(s >= 400 for s in seen)
