"""`steph serve`'s glibc malloc policy (issue 7): applied with mallopt in the serving process and exported to
`--workers` processes through glibc's own variables, which a user's setting overrides."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from app.cli import service

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def test_policy_is_exported_and_a_user_value_wins(monkeypatch) -> None:
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    for _, env, _ in service.MALLOC_POLICY:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the user's choice
    service._return_big_frees_to_the_os()
    assert (
        os.environ["MALLOC_ARENA_MAX"] == "4"
        and dict((e, v) for _, e, v in service.MALLOC_POLICY)["MALLOC_ARENA_MAX"] == 1
    )
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == str(64 << 20)
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == str(128 << 20)
    assert calls == [(-3, 64 << 20), (-1, 128 << 20)]  # M_ARENA_MAX (-8) left to the user's variable


def test_the_real_mallopt_accepts_every_value() -> None:
    """In a child process (the policy changes the allocator for the rest of the process): glibc returns 1 on
    success for each parameter, so a wrong parameter number would fail here."""
    code = (
        "import ctypes; from app.cli.service import MALLOC_POLICY; libc = ctypes.CDLL('libc.so.6'); "
        "print([libc.mallopt(p, v) for p, _, v in MALLOC_POLICY])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1, 1, 1]"
