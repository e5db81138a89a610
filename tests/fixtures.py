"""A tiny world of real files for service and API tests: D = 16, hidden 8, attention 4, 4 bins.

    make_tiny_world(root) -> TinyWorld(base, checkpoints {cancer: path}, cohort dir, cohort zip, cohort
    tar.gz)

Checkpoints are θ₀ plus seeded noise (no training needed to test registration); the cohort has 8 patients
(train 5 / test 3), one slide each, bags of 3–40 patches in HDF5 (TRIDENT layout).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import httpx
import numpy as np
import torch
from safetensors.torch import save_file

from app.domain.mil import FamilyDims, new_abmil
from app.domain.task_vectors import StateDict

DIMS = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4)
CANCERS = ("brca", "luad", "kirc")


def base_state(dims: FamilyDims = DIMS, seed: int = 0) -> StateDict:
    """θ₀ in the reference layout (float32, contiguous)."""
    return {k: v.detach().clone().contiguous() for k, v in new_abmil(dims, seed).state_dict().items()}


def checkpoint_state(base: StateDict, seed: int, scale: float = 0.1) -> StateDict:
    """θ_c = θ₀ + scale · N(0, 1) (seeded): a stand-in for a fine-tuned checkpoint."""
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=gen)).contiguous() for k, v in base.items()}


def write_safetensors(path: Path, state: StateDict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def write_pth(path: Path, state: StateDict, *, wrap: bool = True) -> Path:
    """The reference format: torch.save({"model": state_dict, "epoch": …}) (or a bare state dict)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "epoch": 3} if wrap else state, path)
    return path


def write_bag(path: Path, n_patches: int, dim: int, seed: int, *, nan: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_patches, dim)).astype(np.float32)
    if nan:
        features[0, 0] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=features)
        f.create_dataset("coords", data=rng.integers(0, 10_000, size=(n_patches, 2)).astype(np.int64))
    return path


def write_cohort(
    directory: Path, *, n_patients: int = 8, dim: int = 16, seed: int = 0, bad_dim_slides: int = 0
) -> Path:
    """labels.csv (patient_id, pathology_id, project, t, e), splits.csv (train/test), bags/<slide>.h5.
    The first `bad_dim_slides` bags get D = dim + 1 (to test validation)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    patients = [f"P{i:03d}" for i in range(n_patients)]
    with open(directory / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "pathology_id", "project", "t", "e"])
        for i, pid in enumerate(patients):
            w.writerow([pid, f"S{i:03d}", "TCGA-TEST", f"{float(rng.uniform(30, 2000)):.1f}", int(i % 2 == 0)])
            n = int(rng.integers(3, 41))
            write_bag(directory / "bags" / f"S{i:03d}.h5", n, dim + (1 if i < bad_dim_slides else 0), seed + i)
    n_train = (n_patients * 5) // 8
    train, test = patients[:n_train], patients[n_train:]
    with open(directory / "splits.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["train", "test"])
        for i in range(max(len(train), len(test))):
            w.writerow([train[i] if i < len(train) else "", test[i] if i < len(test) else ""])
    return directory


def zip_dir(directory: Path, out: Path, *, wrap: str | None = "cohort") -> Path:
    """Zip `directory` (members under `wrap/` when given)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(directory.rglob("*")):
            if p.is_file():
                rel = p.relative_to(directory).as_posix()
                zf.write(p, f"{wrap}/{rel}" if wrap else rel)
    return out


def tar_dir(directory: Path, out: Path) -> Path:
    """tar.gz of `directory` with its files at the top level."""
    with tarfile.open(out, "w:gz") as tf:
        for p in sorted(directory.rglob("*")):
            tf.add(p, arcname=p.relative_to(directory).as_posix(), recursive=False)
    return out


def tar_with_member(
    out: Path, name: str, *, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", linkname: str = ""
) -> Path:
    """A tar.gz holding one crafted member (path traversal, symlink, device …)."""
    with tarfile.open(out, "w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out


@dataclass
class TinyWorld:
    root: Path
    base: Path
    base_state: StateDict
    checkpoints: dict[str, Path] = field(default_factory=dict)
    checkpoint_states: dict[str, StateDict] = field(default_factory=dict)
    cohort: Path | None = None
    cohort_zip: Path | None = None
    cohort_tar: Path | None = None


def make_tiny_world(root: Path) -> TinyWorld:
    """Write θ₀, one checkpoint per cancer in CANCERS and a valid cohort (+ zip and tar.gz) under `root`."""
    base = base_state()
    world = TinyWorld(root=root, base=write_safetensors(root / "base.safetensors", base), base_state=base)
    for i, cancer in enumerate(CANCERS):
        state = checkpoint_state(base, seed=100 + i)
        world.checkpoint_states[cancer] = state
        world.checkpoints[cancer] = write_safetensors(root / "checkpoints" / f"{cancer}.safetensors", state)
    world.cohort = write_cohort(root / "cohort_brca")
    world.cohort_zip = zip_dir(world.cohort, root / "cohort_brca.zip")
    world.cohort_tar = tar_dir(world.cohort, root / "cohort_brca.tar.gz")
    return world


def fresh_pg_database() -> str:
    """A fresh database on the server named by STEPH_TEST_PG (e.g. postgresql://steph@127.0.0.1:5432): set it
    to run the API and integration tests on PostgreSQL instead of SQLite (test_postgres.py always does)."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(os.environ["STEPH_TEST_PG"] + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return os.environ["STEPH_TEST_PG"].replace("postgresql://", "postgresql+psycopg://") + "/" + name


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers the tests start)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until GET /health/ready answers 200; pytest.fail with the server log when it exits or times out."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"steph serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"service not ready after {timeout}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve(env: dict[str, str], cwd: Path, log: Path, timeout: float = 60) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `steph serve` on a free loopback port with `env` (output to `log`): yields (url, process) once it
    is ready; terminates it afterwards."""
    port = free_port()
    with log.open("wb") as fh:
        cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, log, timeout)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
