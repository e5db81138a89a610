"""Service settings: one pydantic-settings object, the only place that reads the environment.

Every field has a `STEPH_<FIELD>` environment variable (e.g. `STEPH_HOME`, `STEPH_DATABASE_URL`,
`STEPH_QUEUE`); a `.env` file in the working directory is read too. Tests build `Settings(...)` directly.

Defaults (the embedded default that `steph serve` runs):
    home          ./.steph                     state directory: SQLite file, admin.key
    database_url  sqlite:///<home>/steph.db
    store_root    ./models_store when home is the default, else <home>/models_store
    queue         embedded (in-process runner); 'celery' sends jobs to Redis workers
    data_root     unset: server-side cohort paths are refused until STEPH_DATA_ROOT names a directory
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".steph")


class Settings(BaseSettings):
    """All service settings (see the module docstring for the defaults that depend on `home`)."""

    # an empty value (`STEPH_JOB_RETENTION_DAYS=`, as .env.example shows it) means "not set": the default
    model_config = SettingsConfigDict(env_prefix="STEPH_", env_file=".env", extra="ignore", env_ignore_empty=True)

    home: Path = DEFAULT_HOME
    database_url: str = ""
    store_root: Path | None = None
    queue: Literal["embedded", "celery"] = "embedded"
    redis_url: str = "redis://localhost:6379/0"
    data_root: Path | None = None
    auto_migrate: bool | None = Field(
        default=None, description="migrate at start-up; default: only for the embedded queue"
    )
    bootstrap_admin_key: bool = True

    max_upload_mb: float = Field(default=1024.0, gt=0, description="largest accepted upload (one file), in MiB")
    max_archive_mb: float = Field(default=8192.0, gt=0, description="largest uncompressed size of a cohort archive")
    max_archive_files: int = Field(default=100_000, gt=0, description="most members in a cohort archive")
    max_patches: int = Field(default=500_000, gt=0, description="most patches in one bag at prediction")
    max_bags_per_request: int = Field(default=64, gt=0)
    pth_timeout_s: float = Field(default=60.0, gt=0, description="time limit for loading one .pth upload")
    pth_memory_mb: int = Field(default=4096, gt=0, description="address-space limit of the .pth loading process")

    max_job_attempts: int = Field(default=3, ge=1)
    job_lease_s: float = Field(
        default=30.0, gt=0, description="a running job without heartbeat this long is interrupted"
    )
    embedded_workers: int = Field(default=1, ge=1)
    celery_visibility_timeout_s: float = Field(default=3600.0, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model_cache_size: int = Field(default=8, ge=1)
    # issue 8: the job reaper (app/services/reaper.py; bound in README, "Job guarantees")
    reaper_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="seconds between passes of the job reaper that re-enqueues jobs whose worker died (stale "
        "heartbeat older than job_lease_s) or whose queue message was lost; runs in every API and worker "
        "process; 0 turns it off (jobs can then stay stuck)",
    )
    # issue 8: service hardening (docs/security.md)
    pth_concurrency: int = Field(
        default=2, ge=1, le=64, description="most .pth conversions (child processes) running at once per process"
    )
    pth_wait_s: float = Field(
        default=10.0, ge=0, description="how long a .pth upload waits for a conversion slot before a 503"
    )
    # issue 11: artifact store adapter (README, "Production"): the local directory, or an S3-compatible bucket with
    # STEPH_STORE_ROOT as this process's scratch cache; credentials from the standard AWS_* variables
    store: Literal["local", "s3"] = "local"
    s3_bucket: str = ""
    s3_prefix: str = Field(default="", description="key prefix inside the bucket, e.g. 'steph/prod'")
    s3_endpoint_url: str | None = Field(default=None, description="MinIO / Ceph URL; unset for AWS S3")
    s3_region: str | None = None
    s3_part_mb: int = Field(default=16, ge=5, le=5120, description="multipart upload part size (MiB)")
    store_cache_mb: float = Field(default=20480.0, gt=0, description="local cache of S3 objects (MiB, LRU)")
    # issue 7: bounded serving and reduced-precision inference (README "Serving under load")
    predict_concurrency: int = Field(
        default=0, ge=0, le=64, description="model forwards at once per process; 0 = auto (CPU: 1 up to 8 cores)"
    )
    predict_queue: int = Field(
        default=16, ge=0, description="predictions waiting for a forward slot; past it POST /predict answers 503"
    )
    predict_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="device of the prediction forwards: auto = cuda when this process sees a GPU, else cpu",
    )
    inference_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="dtype of the two N×D matmuls at prediction; auto = bfloat16 on CPUs with native bf16 "
        "(avx512_bf16 / AMX), float16 on CUDA, else float32",
    )
    # issue 9: lifecycle (job expiry, garbage collection) and job-completion webhooks
    job_retention_days: float | None = Field(
        default=None, gt=0, description="finished jobs without a model expire this long after finishing (gc)"
    )
    gc_grace_s: float = Field(default=3600.0, ge=0, description="gc spares unreferenced objects younger than this")
    webhook_secret: str | None = Field(default=None, description="HMAC-SHA256 key of the X-STEPH-Signature header")
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="seconds per webhook delivery attempt")
    webhook_max_attempts: int = Field(default=5, ge=1, description="webhook deliveries tried before giving up")
    webhook_backoff_s: float = Field(default=1.0, ge=0, description="first retry delay; doubles on each retry")
    webhook_allowed_networks: str = Field(
        default="",
        description="comma-separated networks (CIDR, e.g. 10.20.0.0/16) a webhook may reach besides public "
        "addresses; loopback, private, link-local (cloud metadata) and other non-public addresses are refused",
    )
    # issue 8: untrusted files — memory limits of the bag readers (docs/security.md)
    request_memory_mb: int = Field(
        default=4096, gt=0, description="most memory the bags of one request (one patient) may take while read"
    )
    process_memory_mb: int = Field(
        default=0, ge=0, description="most memory all bags being read at once may take; 0 = half the machine's RAM"
    )
    lmdb_timeout_s: float = Field(default=120.0, gt=0, description="time limit for reading one LMDB value")
    min_base_retention: float = Field(
        default=0.2,
        le=1.0,
        description="POST /checkpoints refuses a checkpoint keeping less than this share of its base's weights "
        "(<θ, θ₀>/|θ₀|²: ≈ 1 when fine-tuned from the base, ≈ 0 when trained from another initialisation); "
        "a negative value turns the check off",
    )
    # issue 12: the promotion gate run inside every merge job unless its params say otherwise ("gate": off | fast
    # | full; fast = 3-fold inner CV on the train split, full = 5-fold; each fold refits the target model and
    # retrains the merge, so fast costs ≈ 3 × (target + merge) training on 2/3 of the patients)
    merge_gate: Literal["off", "fast", "full"] = "fast"
    merge_gate_margin: float = 0.0
    # issue 7: POST /predict/paths — predict keys may score bag files under data_root by path (no upload)
    predict_paths: bool = Field(
        default=False, description="let predict keys score bag files under STEPH_DATA_ROOT by path"
    )
    log_level: str = "INFO"

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        from app.services.webhooks import parse_networks

        parse_networks(value)  # ValueError names the bad entry: the service does not start with it
        return value

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        """Make paths absolute (relative to the working directory) and fill the home-derived defaults."""
        self.home = self.home.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'steph.db'}"
        if self.store_root is None:
            default_home = self.home == DEFAULT_HOME.resolve()
            self.store_root = Path("models_store") if default_home else self.home / "models_store"
        self.store_root = self.store_root.expanduser().resolve()
        if self.data_root is not None:
            self.data_root = self.data_root.expanduser().resolve()
        return self

    @property
    def migrate_on_start(self) -> bool:
        return self.queue == "embedded" if self.auto_migrate is None else self.auto_migrate

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def admin_key_path(self) -> Path:
        return self.home / "admin.key"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings read from the environment (cached; tests pass their own Settings instead)."""
    return Settings()
