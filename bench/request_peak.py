"""One request's peak memory in the service's scoring path: the bag cast in place vs copied (issue 7).

    nice -n 10 python -m bench.request_peak [--n 10000] [--rounds 3]

Each measurement is a fresh child process with `steph serve`'s malloc policy (app.cli.service): a random STEPH
(bench.predict_load.build_models, D = 1536, 12 sources), the free heap trimmed, the kernel's peak-RSS mark reset,
then app.services.predict.score_patient on one N × 1536 float16 .h5 six times in a row (the read, the finite check,
the cast to the auto dtype, the forward); printed: the peak RSS over the base after each request. Modes, alternated
round by round: "in place" (today: cast_bag(reuse=True), a float16 -> bfloat16 cast converts the bag where it was
read) and "copy" (the cast into a second [N, D] buffer, as before session 10).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.predict_load import machine, write_fp16_bag
from bench.service_throughput import REPO

CHILD = """
from app.cli.service import _return_big_frees_to_the_os
_return_big_frees_to_the_os()
import ctypes, gc, json, sys
from pathlib import Path
import app.services.predict as svc
from bench.predict_load import DIMS, build_models, scoring_settings
mode, path = sys.argv[1], Path(sys.argv[2])
if mode == "copy":
    cast = svc.cast_bag
    svc.cast_bag = lambda bag, dtype, reuse=False: cast(bag, dtype)
model = build_models(DIMS)["steph"]
settings = scoring_settings("auto")
files = [svc.BagFile("bag.h5", path)]
def status(key):
    with open("/proc/self/status") as fh:
        return int(next(x for x in fh if x.startswith(key)).split()[1]) / 1024
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # the slack the model's construction left in the heap
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
peaks = []
for _ in range(6):
    svc.score_patient(model, "P", files, settings, 0)
    peaks.append(round(status("VmHWM:") - base, 1))
print(json.dumps(peaks))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.request_peak", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    peaks: dict[str, list[list[float]]] = {"in place": [], "copy": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_fp16_bag(Path(tmp) / "bag.h5", args.n, 1536)
        for _ in range(args.rounds):
            for mode in peaks:
                cmd = [sys.executable, "-c", CHILD, "copy" if mode == "copy" else "in-place", str(path)]
                out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
                peaks[mode].append(json.loads(out.strip().splitlines()[-1]))
    bag_mb = args.n * 1536 * 2 / 2**20
    print(f"Command: `nice -n 10 python -m bench.request_peak --n {args.n} --rounds {args.rounds}`  ")
    print(f"Machine: {machine()}; one {args.n:,} × 1536 float16 bag ({bag_mb:.1f} MiB).\n")
    print("| cast | peak RSS over base after requests 1…6, MiB (one line per fresh process) | median of the last |")
    print("|---|---|---:|")
    for mode, runs in peaks.items():
        lines = "<br>".join(" ".join(f"{x:.0f}" for x in r) for r in runs)
        print(f"| {mode} | {lines} | {statistics.median(r[-1] for r in runs):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
