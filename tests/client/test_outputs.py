"""Output rows, survival interpolation, crash repair and resume reading (no server needed)."""

from __future__ import annotations

import json
import math

import pytest

from app.client.outputs import (
    COLUMNS,
    OutputError,
    RowWriter,
    build_row,
    format_for,
    read_done,
    repair_partial_line,
    survival_at,
    top_sources_text,
)
from app.client.types import Prediction, SourceUse

EDGES = [0.0, 365.0, 730.0, 1095.0, 1460.0]
PROBS = [1.0, 0.9, 0.7, 0.5, 0.2]


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (-1.0, 1.0),
        (0.0, 1.0),
        (364.9, 1.0),
        (365.0, 0.9),
        (700.0, 0.9),
        (1095.0, 0.5),
        (1825.0, 0.2),
        (9e9, 0.2),
    ],
)
def test_survival_at_is_the_step_function_at_the_last_edge(t, expected):
    assert survival_at(EDGES, PROBS, t) == expected


def test_survival_at_before_first_edge_is_one_and_lengths_must_match():
    assert survival_at([365.0, 730.0], [0.8, 0.6], 100.0) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        survival_at([0.0, 365.0], [1.0], 10.0)


def _pred(risk=-2.5, sources=()):
    return Prediction(
        patient_id="x",
        risk=risk,
        times_days=EDGES,
        probabilities=PROBS,
        sources=list(sources),
        model_id="m1",
        model_sha256="ab" * 32,
    )


def test_build_row_reads_1_3_5_years_and_sorts_sources_by_weight():
    srcs = [SourceUse("LUAD", 0.22, 0.5), SourceUse("BRCA", 0.414, 0.1)]
    row = build_row(_pred(sources=srcs), patient_id="P1", model_id="m1", model_sha256="", scored_at="T")
    assert (row["surv_1y"], row["surv_3y"], row["surv_5y"]) == (0.9, 0.5, 0.2)
    assert row["top_sources"] == "BRCA:0.41;LUAD:0.22"
    assert row["model_sha256"] == "ab" * 32 and row["patient_id"] == "P1"
    assert top_sources_text([]) == ""
    assert top_sources_text([*srcs, SourceUse("KIRC", 0.0, 0.3), SourceUse("GBM", 0.004, 0.3)]) == "BRCA:0.41;LUAD:0.22"


def test_build_row_refuses_non_finite_risk():
    with pytest.raises(ValueError, match="non-finite"):
        build_row(_pred(risk=math.nan), patient_id="P1", model_id="m1", model_sha256="", scored_at="T")


def test_format_for_suffix_and_explicit(tmp_path):
    assert format_for(tmp_path / "a.csv", None) == "csv"
    assert format_for(tmp_path / "a.JSONL", None) == "jsonl"
    assert format_for(tmp_path / "a.ndjson", "fhir") == "fhir"
    with pytest.raises(OutputError, match=r"\.csv or \.jsonl"):
        format_for(tmp_path / "a.txt", None)


def test_repair_truncates_only_an_unterminated_last_line(tmp_path):
    f = tmp_path / "out.csv"
    f.write_bytes(b"h1,h2\nP1,1\nP2,0.")
    assert repair_partial_line(f) == len(b"P2,0.")
    assert f.read_bytes() == b"h1,h2\nP1,1\n"
    assert repair_partial_line(f) == 0
    g = tmp_path / "only_partial.jsonl"
    g.write_bytes(b'{"patient_id": "P')
    assert repair_partial_line(g) == 17 and g.read_bytes() == b""


def _row(pid, model="m1"):
    return {
        "patient_id": pid,
        "risk": -1.5,
        "surv_1y": 0.9,
        "surv_3y": 0.5,
        "surv_5y": 0.2,
        "model_id": model,
        "model_sha256": "s",
        "top_sources": "BRCA:0.50",
        "scored_at": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "fhir"])
def test_written_rows_are_read_back_as_done_after_a_crash(tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    w = RowWriter(out, fmt)
    for pid in ("P1", "P,2", "P3"):
        w.write(_row(pid))
    w.close()
    with out.open("ab") as fh:
        fh.write(b'{"broken')  # a killed writer
    w = RowWriter(out, fmt)  # opening repairs
    w.write(_row("P4"))
    w.close()
    assert read_done(out, fmt) == {"P1": "m1", "P,2": "m1", "P3": "m1", "P4": "m1"}
    lines = out.read_text().splitlines()
    assert len(lines) == 4 + (fmt == "csv")
    if fmt == "csv":
        assert lines[0] == ",".join(COLUMNS)
    else:
        assert all(json.loads(line) for line in lines)


def test_foreign_csv_header_is_refused(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("id,score\nP1,3\n")
    with pytest.raises(OutputError, match="different header"):
        read_done(out, "csv")


def test_garbage_jsonl_line_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"patient_id": "P1", "model_id": "m"}\nnot json\n')
    with pytest.raises(OutputError, match="line 2"):
        read_done(out, "jsonl")
