"""app.domain stays pure: importing every module pulls in no web, database or queue library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("fastapi", "sqlalchemy", "celery", "redis", "starlette")
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, pkgutil, sys
{pre}
import app.domain
names = [m.name for m in pkgutil.walk_packages(app.domain.__path__, "app.domain.")]
for name in names:
    importlib.import_module(name)
print("NAMES=" + ",".join(names))
print("BAD=" + ",".join(sorted({{m.split(".")[0] for m in sys.modules}} & set({forbidden!r}))))
"""


def imported(pre: str = "") -> tuple[list[str], str]:
    """(app.domain modules imported, forbidden top-level packages in sys.modules) in a fresh interpreter."""
    code = SCRIPT.format(pre=pre, forbidden=FORBIDDEN)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return lines["NAMES"].split(","), lines["BAD"]


def test_domain_imports_no_service_libraries():
    names, bad = imported()
    for module in ("metrics", "training", "evaluation", "pipeline", "mil", "survival", "merging.base"):
        assert f"app.domain.{module}" in names
    assert bad == "", f"app.domain imported {bad}; keep web/DB/queue code out of the domain"


def test_the_check_sees_a_forbidden_import():
    _, bad = imported(pre="import sqlalchemy")
    assert bad == "sqlalchemy"
