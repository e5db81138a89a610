"""Scoring throughput through the whole service: `steph-client score` against `steph serve` (embedded defaults).

    python -m bench.service_throughput [--patients 40] [--patches 4000] [--workers 1 2 4] [--quick]

What a hospital sees: a folder of TRIDENT .h5 bags (D = 1536, realistic ABMIL dims 1536 → 512 → 384, 32 bins)
scored by `steph-client score` over HTTP against a local `steph serve` — reading each file, the multipart upload,
the server's validation and the model forward pass, the CSV row. The model is a STEPH merge (top-k 5) of a target
and 6 sources built from random task vectors around a random θ₀ (its cost does not depend on the values; the
merge job trains for one step on 4 patients so that it finishes in seconds). The baseline is the same model
loaded in-process scoring the same files one after the other (read_bag + forward): the ratio shows the cost of the
service layers. Everything runs on this machine, so client and server share its cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from app.domain.mil import FamilyDims, new_abmil
from app.io.synth_files import write_h5_bag

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_inputs(root: Path, dims: FamilyDims, n_patients: int, patches: int, n_sources: int) -> dict:
    """θ₀, checkpoints (θ₀ + 0.02·noise), a 12-patient target cohort, and the folder of bags to score."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    base = {k: v.contiguous() for k, v in new_abmil(dims, 0).state_dict().items()}
    save_file(base, str(root / "base.safetensors"))
    ckpts = {}
    for name in ["target", *(f"source{i}" for i in range(n_sources))]:
        state = {k: (v + 0.02 * torch.randn(v.shape, generator=gen)).contiguous() for k, v in base.items()}
        ckpts[name] = root / f"{name}.safetensors"
        save_file(state, str(ckpts[name]))
    cohort = root / "cohort"
    (cohort / "bags").mkdir(parents=True)
    with open(cohort / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "pathology_id", "t", "e"])
        for i in range(12):
            w.writerow([f"C{i}", f"C{i}-S1", 100 + 150 * i, i % 2])
            write_h5_bag(cohort / "bags" / f"C{i}-S1.h5", torch.randn(64, dims.in_dim, generator=gen))
    (cohort / "splits.csv").write_text("train,test\n" + "".join(f"C{i},C{i + 4}\n" for i in range(4)))
    bags = root / "slides"
    bags.mkdir()
    for i in range(n_patients):
        write_h5_bag(bags / f"P{i:04d}.h5", torch.randn(patches, dims.in_dim, generator=gen))
    return {"ckpts": ckpts, "cohort": cohort, "bags": bags}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patients", type=int, default=40)
    p.add_argument("--patches", type=int, default=4000)
    p.add_argument("--sources", type=int, default=6)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--quick", action="store_true", help="D = 64, 8 patients of 200 patches")
    args = p.parse_args(argv)
    dims = FamilyDims(in_dim=1536, hidden_dim=512, attn_dim=384, n_bins=32)
    if args.quick:
        dims, args.patients, args.patches = FamilyDims(in_dim=64, hidden_dim=32, attn_dim=16, n_bins=8), 8, 200
    from app.client import Client

    root = Path(tempfile.mkdtemp(prefix="steph-throughput-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPH_")}
    env.update(STEPH_HOME=str(root / "home"), STEPH_STORE_ROOT=str(root / "store"), PYTHONPATH=str(REPO))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env, cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        inputs = write_inputs(root, dims, args.patients, args.patches, args.sources)
        for _ in range(200):
            if (root / "home" / "admin.key").is_file():
                break
            time.sleep(0.1)
        key = (root / "home" / "admin.key").read_text().strip()
        with Client(url, key, timeout=600) as c:
            base = c.register_base(inputs["ckpts"]["target"].parent / "base.safetensors", "bench", "random-1536")
            ids = {n: c.register_checkpoint(path, n, base.id).id for n, path in inputs["ckpts"].items()}
            cohort = c.register_cohort(inputs["cohort"], "bench", base.id)
            job = c.submit_merge_job("steph", base.id, ids["target"], cohort.id,
                                     params={"epochs": 1, "accum": 4, "gate": "off"})  # fmt: skip
            job = c.wait_for_job(job.id, poll_s=0.5)
            assert job.model_id, f"merge job failed: {job.raw.get('error')}"
            model_id = job.model_id
        results = []
        for workers in args.workers:
            out = root / f"scores-{workers}.csv"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "app.client.cli", "score", "--model", model_id, "--input",
                            str(inputs["bags"]), "--output", str(out), "--workers", str(workers), "-q"],
                           env={**env, "STEPH_URL": url, "STEPH_API_KEY": key}, check=True)  # fmt: skip
            wall = time.perf_counter() - t0
            rows = sum(1 for _ in open(out)) - 1
            assert rows == args.patients, f"{rows} rows scored of {args.patients}"
            results.append((workers, wall))
        baseline = in_process_baseline(root, model_id, inputs["bags"], env, key, url)
    finally:
        server.terminate()
        server.wait(timeout=30)
    size_mb = sum(f.stat().st_size for f in inputs["bags"].iterdir()) / 2**20 / args.patients
    print(render(args, dims, results, baseline, size_mb))
    shutil.rmtree(root, ignore_errors=True)
    return 0


def in_process_baseline(root: Path, model_id: str, bags: Path, env: dict, key: str, url: str) -> float:
    """Seconds to read every bag and run the same model in this process, one after the other."""
    from app.client import Client
    from app.io.artifacts import load_model_file
    from app.io.bags import read_bag

    with Client(url, key) as c:
        artifact = c.download_artifact(model_id, root / "model.safetensors")
    model = load_model_file(Path(artifact)).model.eval()
    files = sorted(bags.iterdir())
    with torch.no_grad():
        model(read_bag(files[0]).features)  # warm-up
        t0 = time.perf_counter()
        for f in files:
            model(read_bag(f, expected_dim=model.dims.in_dim).features)
    return time.perf_counter() - t0


def render(args, dims: FamilyDims, results: list[tuple[int, float]], baseline: float, size_mb: float) -> str:
    n = args.patients
    lines = [
        "| how | wall time (s) | patients / s | × in-process |",
        "|---|---:|---:|---:|",
        f"| in-process: read_bag + forward, sequential | {baseline:.1f} | {n / baseline:.2f} | 1.00 |",
    ]
    for workers, wall in results:
        lines.append(f"| `steph-client score --workers {workers}` → `steph serve` | {wall:.1f} | {n / wall:.2f} | "
                     f"{wall / baseline:.2f} |")  # fmt: skip
    cmd = "python -m bench.service_throughput " + " ".join(sys.argv[1:])
    return (
        f"Command: `{cmd.strip()}`  \nMachine: `{' '.join(platform.uname()[:3])} {platform.machine()}`, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}. {n} patients, one .h5 bag each of {args.patches} "
        f"patches × D = {dims.in_dim} ({size_mb:.1f} MiB per file); model: STEPH, {args.sources} sources, "
        f"top-k 5, dims {dims.in_dim} → {dims.hidden_dim} → {dims.attn_dim}, {dims.n_bins} bins.\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
