"""docker-compose.yml, Dockerfile, .env.example, the README and app/settings.py agree (`docker compose
config` cannot run here, so the compose file is parsed and checked against the code it starts)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra")

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
ENV_EXAMPLE = (REPO / ".env.example").read_text()
SETTING_VARS = {f"STEPH_{name.upper()}" for name in Settings.model_fields}
COMPOSE_OWN = {"COMPOSE_PROFILES"}  # read by docker compose itself
_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
_DEFAULTED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])((?:[^{}]|\{[^{}]*\})*))?\}")
_ENV_LIKE = re.compile(r"\b(STEPH_[A-Z0-9_]+|(?:POSTGRES|REDIS|TORCH|AWS|COMPOSE|PUBLISH|API)_[A-Z0-9_]+)\b")


def services() -> dict[str, dict[str, Any]]:
    return COMPOSE["services"]


def env_example_names() -> dict[str, str | None]:
    """NAME → value for `NAME=value` lines, None for documented-but-commented `# NAME=` lines."""
    names: dict[str, str | None] = {}
    for line in ENV_EXAMPLE.splitlines():
        if m := re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip()):
            names[m.group(2)] = None if m.group(1) else m.group(3)
    return names


def resolve(value: str) -> str:
    """Compose interpolation with every variable unset: ${X:-default} → default, ${X:?err} → 'set', ${X} → ''."""
    for _ in range(3):  # nested defaults
        value = _DEFAULTED.sub(lambda m: m.group(3) if m.group(2) == "-" else ("set" if m.group(2) else ""), value)
    return value.replace("$$", "$")


def test_profiles_let_a_host_without_a_gpu_start_a_cpu_worker() -> None:
    svc = services()
    for core in ("postgres", "redis", "migrate", "api"):
        assert "profiles" not in svc[core], core
    assert svc["worker-cpu"]["profiles"] == ["cpu"] and svc["worker-gpu"]["profiles"] == ["gpu"]
    assert "deploy" not in svc["worker-cpu"], "the CPU worker must not reserve a GPU"
    (device,) = svc["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert svc["worker-cpu"]["environment"]["STEPH_DEVICE"] == "cpu"
    assert svc["worker-gpu"]["environment"]["STEPH_DEVICE"] == "cuda"
    assert "cu" in resolve(svc["worker-gpu"]["build"]["args"]["TORCH_INDEX_URL"]).rsplit("/", 1)[1]
    assert resolve(svc["worker-cpu"]["build"]["args"]["TORCH_INDEX_URL"]).endswith("/cpu")
    assert svc["minio"]["profiles"] == svc["minio-init"]["profiles"] == ["minio"]
    for name in ("api", "worker-cpu", "worker-gpu"):  # an optional dependency may not block the core stack
        assert svc[name]["depends_on"]["minio-init"]["required"] is False


@pytest.mark.parametrize("name", ["migrate", "api", "worker-cpu", "worker-gpu"])
def test_every_steph_variable_compose_sets_is_a_valid_setting(name: str) -> None:
    env = services()[name]["environment"]
    steph = {k: resolve(str(v)) for k, v in env.items() if k.startswith("STEPH_")}
    unknown = sorted(set(steph) - SETTING_VARS)
    assert not unknown, f"{name} sets {unknown}, which app/settings.py does not read"
    fields = {k[len("STEPH_") :].lower(): v for k, v in steph.items() if v != ""}
    settings = Settings(_env_file=None, **fields)  # type: ignore[call-arg]  (validates every value)
    assert settings.queue == "celery" and settings.auto_migrate is False
    assert settings.database_url.startswith("postgresql+psycopg://") and settings.redis_url.startswith("redis://")


def test_commands_and_health_checks_run_real_code() -> None:
    import importlib.util

    from app.api.routes.health import router as health_router
    from app.cli import build_parser

    svc = services()
    for name in ("migrate", "api", "worker-cpu", "worker-gpu"):
        argv = [resolve(str(a)) for a in svc[name]["command"]]
        assert argv[0] == "steph", name
        build_parser().parse_args(argv[1:])  # SystemExit on an unknown option
    api_args = [resolve(str(a)) for a in svc["api"]["command"]]
    assert api_args[api_args.index("--workers") + 1] == "2"
    assert svc["api"]["healthcheck"]["test"][-1] == "http://localhost:8000/health/ready"
    assert "/health/ready" in {getattr(r, "path", None) for r in health_router.routes}
    for name in ("worker-cpu", "worker-gpu"):
        test = svc[name]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "workers.health"], "a worker's check must ask the worker itself"
    assert importlib.util.find_spec("workers.health") is not None


def test_every_compose_variable_is_in_env_example_and_every_entry_is_used() -> None:
    listed = env_example_names()
    referenced = set(_REF.findall(COMPOSE_TEXT))
    assert referenced - set(listed) == set(), "add these to .env.example"
    stray = sorted(n for n in listed if n not in SETTING_VARS and n not in referenced and n not in COMPOSE_OWN)
    assert not stray, f".env.example lists {stray}: neither a setting nor used by docker-compose.yml"
    missing = sorted(SETTING_VARS - set(listed))
    assert not missing, f"settings missing from .env.example (add each with its default and meaning): {missing}"
    profiles = {p for s in services().values() for p in s.get("profiles", [])}
    assert set((listed["COMPOSE_PROFILES"] or "").split(",")) <= profiles


def test_env_example_values_are_valid_settings() -> None:
    active = {k: v for k, v in env_example_names().items() if v is not None and k in SETTING_VARS}
    Settings(_env_file=None, **{k[len("STEPH_") :].lower(): v for k, v in active.items()})  # type: ignore[call-arg]
    documented_defaults = {}
    for k, v in env_example_names().items():
        if v is None and k in SETTING_VARS:
            m = re.search(rf"^#\s*{k}=(.*)$", ENV_EXAMPLE, re.M)
            if m and m.group(1):
                documented_defaults[k[len("STEPH_") :].lower()] = m.group(1)
    Settings(_env_file=None, **documented_defaults)  # type: ignore[call-arg]  (the commented examples parse too)


def _readme_sections(*keywords: str) -> str:
    text = (REPO / "README.md").read_text()
    parts = re.split(r"^## ", text, flags=re.M)
    return "\n".join(p for p in parts if any(k in p.splitlines()[0].lower() for k in keywords))


def test_docs_name_only_real_variables_services_and_profiles() -> None:
    listed = set(env_example_names())
    docs = _readme_sections("configuration", "production")
    for name in set(_ENV_LIKE.findall(docs)):
        if name.startswith("STEPH_"):
            assert name in SETTING_VARS or name in listed, f"the docs name {name}: not a setting nor in .env.example"
        else:
            assert name in listed, f"the docs name {name}, which .env.example does not list"
    svc, profiles = services(), {p for s in services().values() for p in s.get("profiles", [])}
    for cmd in re.findall(r"docker compose [^\n`#]*", _readme_sections("production")):
        words = shlex.split(cmd)
        for i, w in enumerate(words):
            if w == "--profile":
                assert words[i + 1] in profiles, cmd
            if w == "--scale":
                assert words[i + 1].split("=")[0] in svc, cmd
        for name in services_named(words):
            assert name in svc, f"{cmd}: no service {name!r} in docker-compose.yml"


def services_named(words: list[str]) -> list[str]:
    """The services a `docker compose … up|run …` command names (run: its first operand; up: all operands)."""
    for verb in ("run", "up"):
        if verb in words:
            operands, skip = [], False
            for w in words[words.index(verb) + 1 :]:
                if skip or w in ("--scale", "--profile", "-e", "--name"):
                    skip = not skip
                    continue
                if not w.startswith("-"):
                    operands.append(w)
            return operands[:1] if verb == "run" else operands
    return []


def test_dockerfile_build_args_and_extras() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    args = set(re.findall(r"^ARG ([A-Z_]+)", dockerfile, re.M))
    for name in ("worker-cpu", "worker-gpu", "api"):
        assert set(services()[name]["build"]["args"]) <= args
    assert '--index-url "${TORCH_INDEX_URL}"' in dockerfile
    assert re.search(r'pip install -e "\.\[[^\]]*s3[^\]]*\]"', dockerfile), "the image needs boto3 for STEPH_STORE=s3"
