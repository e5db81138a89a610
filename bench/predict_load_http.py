"""bench.predict_load, part 4: the real service. One `steph serve` (embedded defaults, default settings: auto
inference dtype, auto forward slots, queue 16) with a STEPH merge of a random target and 12 sources (D = 1536),
and one 10 000 × 1536 float16 TRIDENT .h5 bag (29 MiB).

- HTTP vs in-process: median wall time of POST /predict (multipart) and POST /predict/bag (the raw body; what
  the client SDK sends for one bag), client side: upload + server + response, against the same model in this
  process: forward alone (the bag already in memory, same dtype) and read + forward; and POST /predict/paths
  (the same file read in place under STEPH_DATA_ROOT: no upload).
- clients: 1 / 4 / 16 threads, each with its own connection, posting the bag back to back (as the SDK does:
  the raw body of POST /predict/bag; then again with multipart POST /predict), each time against a fresh
  server whose model was loaded with a 16-patch bag; throughput (requests / s), p50 / p95 latency, the
  server's peak RSS above its level before the first full-size bag (the kernel's high-water mark), and the CPU
  seconds per request of the server and of the clients: with both on one machine, cores ÷ that is a ceiling no
  scheduling can pass, and throughput ÷ ceiling says how much of the machine a block used.
- HTTP floor: the same bytes POSTed to a bare Starlette app under uvicorn that only receives them
  (bench/http_floor_app.py), median of 7: the least any upload route can cost on this machine's HTTP stack.
- cold start: a fresh `steph serve` on the same home (the model on disk, loaded on the first request): seconds
  from the spawn to the first 200 from POST /predict.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import httpx
import numpy as np
import torch

from bench.predict_load import write_fp16_bag
from bench.service_throughput import REPO, _free_port, write_inputs

N_PATCHES, SOURCES = 10000, 12


def _status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as fh:
        line = next(x for x in fh if x.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def _rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of `pid` to its current RSS (Linux ≥ 4.0: "5" > clear_refs);
    False where that is not allowed (then only the sampled peak counts)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Peak RSS (MiB) of `pid` while active: the kernel's exact high-water mark (VmHWM, reset on entry) where
    /proc allows it, else RSS sampled every 10 ms (which can miss a peak of a few ms: a bag and its cast copy
    coexist only briefly). Both are taken and the larger one kept."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.exact = False

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> RssSampler:
        self.exact = reset_peak_rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.exact:
            self.peak = max(self.peak, _status_mb(self.pid, "VmHWM"))


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) `pid` has used so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _spawn(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _setup(root: Path, dims: Any, url: str, key: str) -> str:
    """Register base, checkpoints and cohort; run a one-epoch STEPH merge; return the model id."""
    from app.client import Client

    inputs = write_inputs(root, dims, 0, 1, SOURCES)
    with Client(url, key, timeout=600) as c:
        base = c.register_base(root / "base.safetensors", "bench", f"random-{dims.in_dim}")
        ids = {n: c.register_checkpoint(path, n, base.id).id for n, path in inputs["ckpts"].items()}
        cohort = c.register_cohort(inputs["cohort"], "bench", base.id)
        job = c.submit_merge_job("steph", base.id, ids["target"], cohort.id, params={"epochs": 1, "accum": 4})
        job = c.wait_for_job(job.id, poll_s=0.5)
        assert job.model_id, f"merge job failed: {job.raw.get('error')}"
        return job.model_id


def _post(http: httpx.Client, model_id: str, data: bytes) -> float:
    t0 = time.perf_counter()
    r = http.post("/predict", data={"model_id": model_id}, files=[("files", ("bag.h5", data, "application/x-hdf5"))])
    r.raise_for_status()
    return time.perf_counter() - t0


def _post_raw(http: httpx.Client, model_id: str, data: bytes) -> float:
    """POST /predict/bag: the bag as the raw body (the client SDK's path for a single bag)."""
    t0 = time.perf_counter()
    params = {"model_id": model_id, "filename": "bag.h5"}
    r = http.post("/predict/bag", params=params, content=data, headers={"Content-Type": "application/octet-stream"})
    r.raise_for_status()
    return time.perf_counter() - t0


def _post_path(http: httpx.Client, model_id: str, rel: str) -> float:
    """POST /predict/paths: the bag read in place under STEPH_DATA_ROOT (no upload)."""
    t0 = time.perf_counter()
    r = http.post("/predict/paths", json={"model_id": model_id, "paths": [rel]})
    r.raise_for_status()
    return time.perf_counter() - t0


def _clients(
    url: str, key: str, model_id: str, data: bytes, n: int, per_client: int, pid: int, base: float, post: Any = None
) -> dict:
    """n clients posting `data` back to back; the server's peak RSS over `base` (its RSS with the model loaded,
    before any full-size bag: the same base for every n, so memory the allocator keeps for reuse after one
    request counts in every row, and a pile-up under concurrency shows as a ratio > 1)."""

    def run(_: int) -> list[float]:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
            return [(post or _post)(http, model_id, data) for _ in range(per_client)]

    idle = base
    with RssSampler(pid) as rss, ThreadPoolExecutor(n) as pool:
        t0, cpu0, own0 = time.perf_counter(), _cpu_s(pid), time.process_time()
        lat = sorted(x for chunk in pool.map(run, range(n)) for x in chunk)
        wall = time.perf_counter() - t0
        server_cpu, client_cpu = _cpu_s(pid) - cpu0, time.process_time() - own0
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    # the CPU ceiling: with server and clients on this machine, no scheduling can serve more than
    # cores / (CPU seconds per request) requests a second (the clients' CPU includes the 10 ms RSS sampler)
    cpu_per_request = (server_cpu + client_cpu) / len(lat)
    return {"clients": n, "requests": len(lat), "throughput": len(lat) / wall, "p50_s": statistics.median(lat),
            "p95_s": p95, "peak_rss_over_idle_mb": rss.peak - idle, "peak_exact": rss.exact,
            "server_cpu_s_per_request": server_cpu / len(lat), "client_cpu_s_per_request": client_cpu / len(lat),
            "cpu_ceiling": _cores() / cpu_per_request, "cores": _cores()}  # fmt: skip


def _http_floor(env: dict[str, str], data: bytes, reps: int = 7) -> float:
    """Median seconds to POST `data` to bench.http_floor_app (uvicorn with the service's defaults: h11, asyncio)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.http_floor_app:app", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for _ in range(300):
                try:
                    http.post("/sink", content=b"x")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            times = []
            for _ in range(reps + 1):  # the first one warms up
                t0 = time.perf_counter()
                r = http.post("/sink", content=data, headers={"Content-Type": "application/octet-stream"})
                r.raise_for_status()
                assert r.json()["bytes"] == len(data), r.text
                times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])
    finally:
        _stop(proc)


def _in_process(root: Path, url: str, key: str, model_id: str, bag_path: Path, reps: int) -> dict:
    from app.client import Client
    from app.domain.precision import cast_bag, resolve_inference_dtype
    from app.io.artifacts import load_model_file
    from app.io.bags import read_bag

    with Client(url, key) as c:
        artifact = c.download_artifact(model_id, root / "model.safetensors")
    model = load_model_file(Path(artifact)).model.eval()
    dtype = resolve_inference_dtype("auto")

    def forward(bag: torch.Tensor) -> None:
        with torch.inference_mode():
            model(cast_bag(bag, dtype))

    bag = read_bag(bag_path, expected_dim=model.dims.in_dim).features
    forward(bag)
    fwd, full = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        forward(bag)
        fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        forward(read_bag(bag_path, expected_dim=model.dims.in_dim).features)
        full.append(time.perf_counter() - t0)
    return {"forward_s": statistics.median(fwd), "read_forward_s": statistics.median(full), "dtype": str(dtype)}


def _client_blocks(
    env: dict[str, str], root: Path, key: str, model_id: str, data: bytes, dim: int, post: Any = None
) -> list[dict]:
    """1, 4 and 16 clients against a FRESH server (same home): the model loaded with a 16-patch bag, then the
    base RSS, then the blocks in that order; `post` = _post (multipart) or _post_raw (what the SDK sends)."""
    tiny = root / "tiny.h5"
    with h5py.File(tiny, "w") as fh:
        fh.create_dataset("features", data=np.zeros((16, dim), np.float16))
    proc, url = _spawn(env, root)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
            t0 = time.perf_counter()
            while True:
                try:
                    _post(http, model_id, tiny.read_bytes())
                    break
                except (httpx.TransportError, httpx.HTTPStatusError):
                    if time.perf_counter() - t0 > 120:
                        raise
                    time.sleep(0.1)
        time.sleep(0.5)
        base = _rss_mb(proc.pid)
        return [
            _clients(url, key, model_id, data, c, per, proc.pid, base, post) for c, per in ((1, 6), (4, 3), (16, 2))
        ]
    finally:
        _stop(proc)


def _cold_start(env: dict[str, str], cwd: Path, key: str, model_id: str, data: bytes) -> dict[str, float]:
    """Seconds from the spawn of `steph serve` to GET /health/ready = 200, and to the first POST /predict = 200."""
    proc, url = _spawn(env, cwd)
    t0, ready = time.perf_counter(), None
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
            while time.perf_counter() - t0 < 120:
                try:
                    if ready is None and http.get("/health/ready").status_code == 200:
                        ready = time.perf_counter() - t0
                    if ready is not None:
                        _post(http, model_id, data)
                        return {"ready_s": ready, "first_predict_s": time.perf_counter() - t0}
                except (httpx.TransportError, httpx.HTTPStatusError):
                    pass
                time.sleep(0.05)
        raise RuntimeError("the server never answered POST /predict")
    finally:
        _stop(proc)


RSS_CHILD = """
from app.cli.service import _return_big_frees_to_the_os
_return_big_frees_to_the_os()  # the malloc policy of `steph serve`
import gc, sys, tempfile, torch
from pathlib import Path
from app.domain.precision import cast_bag, resolve_inference_dtype
from app.services.predict import BagFile, score_patient
from app.settings import Settings
from bench.predict_load import build_models
from app.domain.mil import FamilyDims
def status(key):
    with open("/proc/self/status") as fh:
        return int(next(x for x in fh if x.startswith(key)).split()[1]) / 1024
n, d, path = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
model = build_models(FamilyDims(d, 512, 384, 32) if d > 64 else FamilyDims(d, 32, 16, 8))["steph"]
settings = Settings(home=Path(tempfile.mkdtemp()))
dtype = resolve_inference_dtype(sys.argv[4])
with torch.inference_mode():
    model(torch.randn(16, d).to(dtype))
gc.collect()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current RSS
base = status("VmRSS:")
settings.inference_dtype = sys.argv[4]
score_patient(model, "P", [BagFile(name="big.h5", path=path)], settings, 0)  # the service's read + forward
print(status("VmHWM:") - base)
"""


def rss_rows(root: Path, n: int, dim: int) -> dict[str, Any]:
    """Peak RSS of reading one n × dim float16 .h5 and scoring it with STEPH, over the level before, as a
    multiple of the bag's float32 size; in a child process each for float32 and the auto dtype."""
    path = root / "big.h5"
    write_fp16_bag(path, n, dim, seed=1)
    fp32_mb = n * dim * 4 / 2**20
    out: dict[str, Any] = {"n": n, "fp32_bag_mb": fp32_mb}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for dtype in ("float32", "auto"):
        cmd = [sys.executable, "-c", RSS_CHILD, str(n), str(dim), str(path), dtype]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1200, check=True)
        out[dtype] = float(run.stdout.strip().splitlines()[-1]) / fp32_mb
    path.unlink()
    return out


def service_rows(
    *, quick: bool = False, rss_n: int = 100000, server_env: dict[str, str] | None = None
) -> dict[str, Any]:
    from app.domain.mil import FamilyDims

    dims = FamilyDims(in_dim=1536, hidden_dim=512, attn_dim=384, n_bins=32)
    if quick:
        dims = FamilyDims(in_dim=64, hidden_dim=32, attn_dim=16, n_bins=8)
    root = Path(tempfile.mkdtemp(prefix="steph-predict-load-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPH_")}
    env.update(STEPH_HOME=str(root / "home"), PYTHONPATH=str(REPO), STEPH_DATA_ROOT=str(root),
               STEPH_PREDICT_PATHS="true", **(server_env or {}))  # fmt: skip
    bag_path = root / "bag10k.h5"
    n = 500 if quick else N_PATCHES
    write_fp16_bag(bag_path, n, dims.in_dim)
    data = bag_path.read_bytes()
    proc, url = _spawn(env, root)
    out: dict[str, Any] = {"bag_mb": len(data) / 2**20, "n_patches": n}
    try:
        for _ in range(600):
            if (root / "home" / "admin.key").is_file():
                break
            time.sleep(0.1)
        key = (root / "home" / "admin.key").read_text().strip()
        model_id = _setup(root, dims, url, key)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
            _post(http, model_id, data)  # load the model, warm up
            _post_raw(http, model_id, data)
            _post_path(http, model_id, bag_path.name)
            multipart, raw, path = [], [], []
            for _ in range(7):  # interleaved: the machine's noise hits all three alike
                multipart.append(_post(http, model_id, data))
                raw.append(_post_raw(http, model_id, data))
                path.append(_post_path(http, model_id, bag_path.name))
            out["http_s"], out["http_raw_s"] = statistics.median(multipart), statistics.median(raw)
            out["http_path_s"] = statistics.median(path)
        out.update(_in_process(root, url, key, model_id, bag_path, reps=5))
    finally:
        _stop(proc)
    out["http_floor_s"] = _http_floor(env, data)
    out["clients"] = _client_blocks(env, root, key, model_id, data, dims.in_dim, _post_raw)
    out["clients_multipart"] = _client_blocks(env, root, key, model_id, data, dims.in_dim, _post)
    out["cold_start"] = _cold_start(env, root, key, model_id, data)
    out["rss"] = rss_rows(root, 2000 if quick else rss_n, dims.in_dim)
    shutil.rmtree(root, ignore_errors=True)
    return out
