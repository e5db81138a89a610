"""bench.predict_load_http's CPU accounting: /proc CPU seconds of a child, and the ceiling in the client table."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.predict_load_http import _cpu_s
from bench.predict_load_render import _client_rows

SPIN = """
import sys, time
sys.stdin.readline()
t = time.process_time()
while time.process_time() - t < 0.6:
    pass
print("done", flush=True)
sys.stdin.readline()
"""


def test_cpu_seconds_of_a_child_count_its_work_not_its_sleep() -> None:
    child = subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        time.sleep(0.3)
        before = _cpu_s(child.pid)
        time.sleep(0.5)  # the child waits on stdin: no CPU
        assert _cpu_s(child.pid) - before < 0.1
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        assert 0.55 <= _cpu_s(child.pid) - before < 1.5
    finally:
        child.kill()
        child.wait()


def test_the_table_shows_the_share_of_the_cpu_ceiling() -> None:
    one = {"clients": 1, "requests": 6, "throughput": 5.0, "p50_s": 0.2, "p95_s": 0.3, "peak_rss_over_idle_mb": 100}
    cpu = {"server_cpu_s_per_request": 0.25, "client_cpu_s_per_request": 0.05, "cpu_ceiling": 2 / 0.3, "cores": 2}
    many = {**one, "clients": 16, "requests": 32, "throughput": 6.0, "peak_rss_over_idle_mb": 120, **cpu}
    old, new = _client_rows([one, many], "raw")
    assert old.endswith("|  |  |")  # a row from before the CPU was measured
    assert "0.250 + 0.050" in new and "| 0.90 (ceiling 6.67 req/s on 2 cores) |" in new
    assert "throughput 1.20, memory 1.20" in new
