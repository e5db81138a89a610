"""bench.predict_load_http.RssSampler: a short peak is caught by the kernel's high-water mark (VmHWM) even when
none of the 10 ms samples sees it."""

from __future__ import annotations

import subprocess
import sys

import bench.predict_load_http as plh
from bench.predict_load_http import RssSampler, _rss_mb

CHILD = """
import sys
sys.stdin.readline()                 # wait until the sampler is on
a = bytearray(300 * 2**20)           # 300 MiB
a[:: 4096] = b"x" * len(a[:: 4096])  # fault every page in
del a                                # freed at once: the peak lasts milliseconds
print("done", flush=True)
sys.stdin.readline()
"""


def test_a_short_peak_is_caught(monkeypatch) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        base = _rss_mb(child.pid)
        monkeypatch.setattr(plh, "_rss_mb", lambda pid: 0.0)  # the samples see nothing: only VmHWM can
        with RssSampler(child.pid) as rss:
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "done"
        assert rss.exact  # /proc/<pid>/clear_refs is writable for our own child on Linux
        assert rss.peak - base > 250  # MiB: the 300 MiB buffer, however short-lived
        monkeypatch.undo()
        assert _rss_mb(child.pid) - base < 100  # and it really was freed again
    finally:
        child.kill()
        child.wait()
