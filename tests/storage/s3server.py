"""A real S3-compatible server for the tests: moto's server mode (`python -m moto.server`) as a subprocess on a
free loopback port. Not a mock of the client: boto3 talks HTTP to it like to MinIO or AWS.

Fixtures (import them into a test module or conftest): `s3_server` (session: the endpoint URL and the
credentials env), `s3_bucket` (a fresh bucket per test), `s3_client`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "steph-test",
    "AWS_SECRET_ACCESS_KEY": "steph-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    env: dict[str, str]  # the AWS_* credentials a process needs to talk to it

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.endpoint_url, config=Config(s3={"addressing_style": "path"}))


def _up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/", timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """`python -m moto.server` on 127.0.0.1:<free port> for the whole session (skipped without moto)."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (`make test` installs the dev extra)")
    pytest.importorskip("boto3")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, **CREDENTIALS}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 30
        while not _up(url):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"moto server did not start on port {port}: {Path(log).read_text()[-2000:]}")
            time.sleep(0.1)
        yield S3Server(endpoint_url=url, env=dict(CREDENTIALS))
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3_client(s3_server: S3Server) -> Any:
    return s3_server.client()


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A new, empty bucket for this test."""
    name = f"steph-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


def s3_env(server: S3Server, bucket: str, scratch: Path, prefix: str = "") -> dict[str, str]:
    """STEPH_* + AWS_* variables for a process (API or worker) on this bucket with its own scratch directory."""
    return {
        **server.env,
        "STEPH_STORE": "s3",
        "STEPH_S3_BUCKET": bucket,
        "STEPH_S3_ENDPOINT_URL": server.endpoint_url,
        "STEPH_S3_PREFIX": prefix,
        "STEPH_S3_REGION": CREDENTIALS["AWS_DEFAULT_REGION"],
        "STEPH_STORE_ROOT": str(scratch),
    }
