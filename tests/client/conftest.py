"""A real STEPH service for the client's tests (session scope).

`steph serve` (uvicorn) on a free port with the embedded defaults in a temporary STEPH_HOME; a tiny
`steph synth` world registered through the SDK, and one STEPH merge job run to get a model id."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures import serve

REPO = Path(__file__).resolve().parents[2]
SYNTH_OPTS = [
    "--cancers", "3", "--dim", "16", "--prototypes", "6", "--patients", "16", "--target-patients", "16",
    "--min-patches", "2", "--max-patches", "24", "--hidden", "8", "--attn", "4", "--bins", "4",
    "--epochs", "1", "--accum", "4", "--seed", "3",
]  # fmt: skip
TARGET, SOURCES = "BLCA", ("BRCA", "CESC")
MERGE_PARAMS = {"epochs": 1, "accum": 4, "lr": 1e-3}


@dataclass
class LiveService:
    url: str
    admin_key: str
    predict_key: str
    model_id: str
    job_id: str
    idempotency_key: str
    base_id: str
    cohort_id: str
    checkpoint_ids: dict[str, str]
    world: Path
    home: Path
    log: Path
    score_bags: list[Path] = field(default_factory=list)

    def env(self, key: str | None = None, **extra: str) -> dict[str, str]:
        """Environment for a `steph-client` subprocess: URL and (predict) key from the environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEPH_")}
        env.update(
            STEPH_URL=self.url,
            STEPH_API_KEY=key or self.predict_key,
            XDG_CONFIG_HOME=str(self.home / "cfg"),
            PYTHONPATH=str(REPO),
        )
        env.update(extra)
        return env


def _steph(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run the `steph` command (python -m app.cli) and return stdout; fail the session with its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"steph {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def _register_and_merge(url: str, admin_key: str, world: Path) -> dict:
    from app.client import Client

    with Client(url, admin_key, timeout=60) as client:
        base = client.register_base(world / "base.safetensors", name="tiny", encoder="synthetic-16")
        ckpts = {
            c: client.register_checkpoint(world / "checkpoints" / f"{c}.safetensors", cancer=c, base_id=base.id)
            for c in (TARGET, *SOURCES)
        }
        cohort = client.register_cohort(world / "cohorts" / TARGET, name="blca", base_id=base.id)
        key = "client-tests-merge-1"
        job = client.submit_merge_job(
            "steph",
            base.id,
            ckpts[TARGET].id,
            cohort.id,
            source_checkpoint_ids=[ckpts[c].id for c in SOURCES],
            params=MERGE_PARAMS,
            idempotency_key=key,
        )
        job = client.wait_for_job(job.id, poll_s=0.2, timeout_s=90)
        assert job.status == "succeeded", f"merge job ended {job.status}: {job.error}"
        return {
            "base_id": base.id,
            "checkpoint_ids": {c: k.id for c, k in ckpts.items()},
            "cohort_id": cohort.id,
            "job_id": job.id,
            "model_id": job.model_id,
            "idempotency_key": key,
        }


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> LiveService:
    try:
        import app.main  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the service (app.main) is not importable yet: {exc}")
    tmp = tmp_path_factory.mktemp("live")
    home, world, log = tmp / "home", tmp / "world", tmp / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPH_")}
    env.update(STEPH_HOME=str(home), PYTHONPATH=str(REPO), STEPH_DATA_ROOT=str(world), STEPH_PREDICT_PATHS="true")
    _steph("--quiet", "synth", str(world), *SYNTH_OPTS, env=env)
    with serve(env, tmp, log) as (url, _proc):
        admin_key = _steph("keys", "create", "--scope", "admin", env=env).strip()
        predict_key = _steph("keys", "create", "--scope", "predict", env=env).strip()
        try:
            info = _register_and_merge(url, admin_key, world)
        except Exception as exc:  # show the server's side of the story
            pytest.fail(f"registering the tiny world / merging failed: {exc}\n{log.read_text()[-4000:]}")
        bags = sorted((world / "cohorts" / SOURCES[0] / "bags").glob("*.h5"))[:10]
        keys = {"admin_key": admin_key, "predict_key": predict_key}
        yield LiveService(url=url, world=world, home=home, log=log, score_bags=bags, **keys, **info)


@pytest.fixture
def bag_folder(live, tmp_path) -> Path:
    """A fresh folder of TRIDENT .h5 bags (some in a sub-folder) from the synthetic world."""
    folder = tmp_path / "slides"
    for i, bag in enumerate(live.score_bags):
        dest = folder / ("batch2" if i % 3 == 0 else "") / bag.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bag, dest)
    return folder
