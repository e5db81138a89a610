"""`steph-client validate --report`: the hospital's KM / calibration / C-index page, offline and without torch."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.client.cli import main
from app.domain import km

REPO = Path(__file__).resolve().parents[2]


def _files(tmp_path: Path, n: int = 60, seed: int = 0) -> tuple[Path, Path, dict]:
    rng = random.Random(seed)
    rows, labels, truth = [], ["patient_id,t,e"], {}
    for i in range(n):
        risk = rng.gauss(0, 1)
        t = max(1.0, rng.expovariate(1 / (900 * (1.8 if risk < 0 else 0.6))))
        e = int(rng.random() < 0.75)
        s1 = 0.9 - 0.2 * risk / 3
        rows.append({"patient_id": f"P{i}", "risk": risk, "surv_1y": s1, "surv_3y": s1 * 0.7, "surv_5y": s1 * 0.5})
        labels.append(f"P{i},{t:.1f},{e}")
        truth[f"P{i}"] = (round(t, 1), e, risk)
    scores, outcomes = tmp_path / "scores.jsonl", tmp_path / "labels.csv"
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcomes.write_text("\n".join(labels) + "\n")
    return scores, outcomes, truth


def test_validate_report_figures_and_numbers(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    scores, labels, truth = _files(tmp_path)
    out = tmp_path / "out" / "validation.html"
    code = main(["validate", "--scores", str(scores), "--labels", str(labels), "--bootstrap", "50",
                 "--report", str(out), "--groups", "3"], env={})  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    page = out.read_text()
    assert set(re.findall(r'data-figure="([a-z-]+)"', page)) == {"km", "calibration", "c-index"}
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    assert f"{result['c_index']:.4f}" in page
    ids = list(truth)
    groups, _ = km.risk_groups([truth[p][2] for p in ids], 3)
    lr = km.logrank_test([truth[p][0] for p in ids], [truth[p][1] for p in ids], groups)
    assert f"p = {lr.p_value:.4g}" in page and f"χ² = {lr.statistic:.3f}" in page


def test_client_validate_report_runs_without_torch_and_says_when_matplotlib_is_missing(tmp_path) -> None:
    scores, labels, _ = _files(tmp_path, n=30, seed=1)
    code = (
        "import sys; blocked = sys.argv[1].split(',');\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in blocked: raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from app.client.cli import main\n"
        "rc = main(sys.argv[2:], env={})\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    args = ["validate", "--scores", str(scores), "--labels", str(labels), "--bootstrap", "10"]
    ok = subprocess.run([sys.executable, "-c", code, "torch", *args, "--report", str(tmp_path / "r.html")],
                        cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert 'data-figure="km"' in (tmp_path / "r.html").read_text()
    plain = subprocess.run([sys.executable, "-c", code, "torch,matplotlib", *args], cwd=REPO, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert plain.returncode == 0, plain.stderr  # the client works without matplotlib when no report is asked
    report = ["--report", str(tmp_path / "r2.html")]
    missing = subprocess.run([sys.executable, "-c", code, "torch,matplotlib", *args, *report], cwd=REPO,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "matplotlib" in missing.stderr
    assert not (tmp_path / "r2.html").exists()
