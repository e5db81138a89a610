"""Storage fixtures: the moto S3 server process, a fresh bucket per test (tests/storage/s3server.py)."""

from tests.storage.s3server import s3_bucket, s3_client, s3_server  # noqa: F401 (fixtures)
