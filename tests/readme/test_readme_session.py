"""README "A full session": its bash blocks, run in order in one shell against a real `steph serve`.

Only sizes change (SMALL_WORLD below: a 4-cancer world with D = 16, 2 epochs, a free port) so the run takes
seconds; every command is otherwise run exactly as written. The test fails when a command fails, when a JSON field
shown in a `# → {…}` comment is missing from what that block printed, or when a `# → text` line no longer matches
(numbers and `…` are wildcards)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import free_port

ROOT = Path(__file__).resolve().parents[2]
SYNTH = (
    "--cancers 4 --dim 16 --prototypes 6 --patients 24 --target-patients 20 --min-patches 2 --max-patches 24 "
    "--hidden 8 --attn 4 --bins 4 --epochs 1 --accum 4 --seed 0"
)
SMALL_WORLD = [
    (r"steph synth world --cancers 4 --patients 80 --target-patients 60 --seed 0", f"steph synth world {SYNTH}"),
    (r'"epochs":20,"lr":0.004,"accum":8', '"epochs":2,"lr":0.004,"accum":8'),
    (r"--bootstrap 200", "--bootstrap 20"),
]


def session_blocks(readme: str) -> list[tuple[str, str]]:
    """(code, its `# →` comments) of every ```bash block of the "A full session" section, in order."""
    section = readme.split("## A full session\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    out = []
    for code in blocks:
        shown, taking = [], False
        for line in code.splitlines():
            stripped = line.strip()
            if stripped.startswith("# →"):
                shown.append(stripped[3:].strip())
                taking = True
            elif taking and stripped.startswith("#  "):
                shown[-1] += " " + stripped[1:].strip()
            else:
                taking = False
        out.append((code, "\n".join(shown)))
    return out


def json_keys(text: str) -> set[str]:
    """Every key of every JSON object that appears anywhere in `text`."""
    decoder, keys = json.JSONDecoder(), set()

    def walk(value) -> None:
        if isinstance(value, dict):
            keys.update(value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        walk(value)
    return keys


def text_pattern(shown: str) -> re.Pattern[str]:
    """A shown text line as a regex: numbers and `…` match anything of their kind."""
    parts = re.split(r"(\d+(?:\.\d+)?|…)", shown)
    rx = "".join(
        r"\d+(?:\.\d+)?" if re.fullmatch(r"\d+(?:\.\d+)?", p) else ".*?" if p == "…" else re.escape(p) for p in parts
    )
    return re.compile(rx)


def check_block(index: int, shown: str, output: str) -> list[str]:
    problems = []
    for line in shown.splitlines():
        if "{" in line:
            wanted = set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)":', line))
            missing = wanted - json_keys(output)
            if missing:
                problems.append(
                    f"block {index + 1}: fields {sorted(missing)} shown in the README are not in the output"
                )
        elif line and not text_pattern(line).search(output):
            problems.append(f"block {index + 1}: no output line matches {line!r}")
    return problems


def test_the_checker_can_fail() -> None:
    out = '{"id":"x","tv_norms":{"a":1}} scored 3, skipped 0 (already in output), failed 0, of 3 patients in 0.1s'
    assert check_block(0, '{"id":"x","task_vector_norms":{…}}', out) != []
    assert check_block(0, '{"id":"x","tv_norms":{…}}', out) == []
    assert check_block(0, "scored 62, skipped 0 (already in output), failed 0, of 62 patients in 0.4s", out) == []
    assert check_block(0, "scored 62 patients in all", out) != []


@pytest.mark.slow
def test_readme_session_runs_as_written(tmp_path: Path) -> None:
    blocks = session_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 7, "the walkthrough lost blocks"
    port = str(free_port())
    script = ["set -euo pipefail"]
    for i, (code, _) in enumerate(blocks):
        for old, new in SMALL_WORLD:
            code = code.replace(old, new)
        script += [f"echo '@@BLOCK {i}@@'; echo '@@BLOCK {i}@@' >&2", code.replace("8000", port)]
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPH_")}
    proc = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=600)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the background server, if the script stopped early
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, output[-4000:]
    pieces = re.split(r"@@BLOCK (\d+)@@\n", output)
    per_block: dict[int, str] = {}
    for number, text in zip(pieces[1::2], pieces[2::2], strict=True):
        per_block[int(number)] = per_block.get(int(number), "") + text
    problems = [p for i, (_, shown) in enumerate(blocks) for p in check_block(i, shown, per_block.get(i, ""))]
    assert problems == [], "\n".join(problems) + "\n\n" + output[-3000:]
