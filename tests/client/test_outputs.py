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


def test_formula_like_csv_cells_are_quoted_and_read_back(tmp_path):
    from app.client.csvcells import neutralise, restore

    ids = ["=cmd|' /C calc'!A0", "+1", "-5", "@SUM(A1)", "'quoted", "''=x", "plain", "a=b"]
    out = tmp_path / "out.csv"
    w = RowWriter(out, "csv")
    for pid in ids:
        w.write({**_row(pid), "risk": -2.5, "top_sources": "-"})
    w.close()
    lines = out.read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in lines[:4]] == ["'=cmd|' /C calc'!A0", "'+1", "'-5", "'@SUM(A1)"]
    assert all(",-2.5,0.9,0.5,0.2,m1,s,'-," in line for line in lines)  # numbers untouched, text quoted
    assert list(read_done(out, "csv")) == ids  # resume finds every id as written
    assert [restore(neutralise(v)) for v in [*ids, "\tx", "\rx", ""]] == [*ids, "\tx", "\rx", ""]
    assert neutralise(-1.5) == -1.5
    j = tmp_path / "out.jsonl"
    w = RowWriter(j, "jsonl")
    w.write(_row("=1+1"))
    w.close()
    assert json.loads(j.read_text())["patient_id"] == "=1+1"  # only CSV is neutralised


def test_a_row_is_never_written_for_an_id_with_a_control_character():
    with pytest.raises(ValueError, match="control character"):
        build_row(_pred(), patient_id="pat\nient", model_id="m1", model_sha256="", scored_at="T")


def test_errors_file_is_replaced_whole_and_removed_when_empty(tmp_path):
    from app.client.outputs import error_row, read_errors, write_errors

    path = tmp_path / "s.errors.csv"
    write_errors(path, [error_row("P1", "/a/P1.h5", 422, "bad D", "T"), error_row("=P2", "x", 0, "-gone", "T")])
    write_errors(path, [error_row("a\tb", "/a/a\tb.h5", 0, "line\nbreak", "T")])
    rows = read_errors(path)
    assert rows == [{"patient_id": "a\\tb", "files": "/a/a\\tb.h5", "status": "0", "message": "line break",
                     "failed_at": "T"}]  # fmt: skip
    assert len(path.read_text().splitlines()) == 2 and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    write_errors(path, [error_row("=P2", "x", 0, "-gone", "T")])
    assert path.read_text().splitlines()[1] == "'=P2,x,0,'-gone,T"
    assert read_errors(path)[0]["patient_id"] == "=P2" and read_errors(path)[0]["message"] == "-gone"
    write_errors(path, [])
    assert not path.exists()
    foreign = tmp_path / "other.csv"
    foreign.write_text("id,score\n1,2\n")
    with pytest.raises(OutputError, match="not a steph-client errors file"):
        read_errors(foreign)


def test_default_errors_file_is_unique_per_output_file(tmp_path):
    from app.client.scoring import default_errors_path

    names = [default_errors_path(tmp_path / n).name for n in ("s.csv", "s.jsonl", "s.fhir", "s.ndjson", "s.CSV")]
    assert names == ["s.errors.csv", "s.jsonl.errors.csv", "s.fhir.errors.csv", "s.ndjson.errors.csv", "s.errors.csv"]
