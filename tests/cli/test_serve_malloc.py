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


ARENAS_CHILD = """
import ctypes, sys, threading
if sys.argv[1] == "policy":
    from app.cli.service import _return_big_frees_to_the_os
    _return_big_frees_to_the_os()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
hold, meet = [], threading.Barrier(4)
def work():
    meet.wait()  # four threads allocating at the same time: glibc gives each its own arena unless limited
    hold.append(libc.malloc(4096))
    meet.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", ARENAS_CHILD, mode], capture_output=True, text=True, env=env,
                         check=True)  # fmt: skip
    return sum(line.startswith("Arena ") for line in out.stderr.splitlines())


def test_the_real_policy_limits_glibc_to_one_arena() -> None:
    """In child processes (the policy changes the allocator for the rest of a process): four threads allocating at
    once get one arena with the policy applied, several without it (so a wrong mallopt call would fail here)."""
    assert _arenas("policy") == 1
    assert _arenas("none") > 1
