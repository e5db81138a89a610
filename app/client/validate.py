"""Local validation of a model's scores against the hospital's own outcomes; the labels never leave the site.

    steph-client validate --scores scores.csv --labels outcomes.csv [--bootstrap 200] [--seed 0]

`--scores` is what `steph-client score` wrote (CSV, JSONL or FHIR NDJSON: patient id and risk per patient).
`--labels` is a CSV with a header holding `patient_id`, `t` (follow-up in days, > 0) and `e` (1 = event observed,
0 = censored); other columns are ignored, and a patient's first row counts (the cohort labels.csv format, one row
per slide, is accepted as is). Scores made per slide (a folder of one bag per slide) are matched through the
labels' pathology_id column and a patient's slides are averaged; a manifest that groups slides is better.
The result is Harrell's C-index of the risk (higher risk = shorter survival) on the patients found in both
files, with the same comparable pairs and tie rules as scikit-survival's `concordance_index_censored`
(tied_tol 1e-8), and a percentile bootstrap 95% interval over resampled patients.

Pure Python (no torch, numpy or server): O(n²) pairs, then O(pairs) per bootstrap resample — a few seconds for
1 000 patients and 200 resamples; `--bootstrap 0` skips the interval.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.client.csvcells import restore

TIED_TOL = 1e-8


class ValidationInputError(ValueError):
    """A scores or labels file that cannot be used, with the line and the fix."""


@dataclass
class ValidationResult:
    c_index: float
    pairs: int
    patients: int
    events: int
    ci_low: float | None
    ci_high: float | None
    n_boot: int
    scored_not_labelled: int
    labelled_not_scored: int
    model_ids: list[str]
    matched_by: str = "patient_id"
    calibration: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any, what: str, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValidationInputError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ValidationInputError(f"{where}: {what} is {value!r}; it must be a finite number")
    return x


def _score_row(obj: dict[str, Any], where: str) -> tuple[str, float, str | None]:
    """(patient id, risk, model id) from a CSV/JSONL row or a FHIR Observation written by `score`."""
    if obj.get("resourceType") == "Observation":
        try:
            pid = obj["subject"]["identifier"]["value"]
            risk = obj["valueQuantity"]["value"]
        except (KeyError, TypeError):
            raise ValidationInputError(
                f"{where}: FHIR Observation without subject.identifier.value or valueQuantity.value"
            ) from None
        model = next((c.get("code") for c in obj.get("method", {}).get("coding", [])), None)
        return str(pid), _number(risk, "risk", where), model
    if "patient_id" not in obj or "risk" not in obj:
        raise ValidationInputError(f"{where}: a score row needs patient_id and risk (as `steph-client score` writes)")
    return str(obj["patient_id"]), _number(obj["risk"], "risk", where), obj.get("model_id") or None


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV scores row with its patient id as `score` meant it (without the quote added to formula-like ids)."""
    if isinstance(row.get("patient_id"), str):
        row["patient_id"] = restore(row["patient_id"])
    return row


def read_scores(path: str | Path) -> tuple[dict[str, float], list[str]]:
    """{patient id: risk} and the distinct model ids, from a CSV (header), JSONL or FHIR NDJSON file."""
    path = Path(path)
    scores: dict[str, float] = {}
    models: list[str] = []
    with open(path, newline="", encoding="utf-8") as f:
        first = f.readline()
        f.seek(0)
        if first.lstrip().startswith("{"):
            rows = []
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append((json.loads(line), f"{path.name} line {n}"))
                    except json.JSONDecodeError as exc:
                        raise ValidationInputError(f"{path.name} line {n}: not JSON ({exc.msg})") from None
        else:
            rows = [(_csv_row(r), f"{path.name} line {n}") for n, r in enumerate(csv.DictReader(f), start=2)]
    for obj, where in rows:
        pid, risk, model = _score_row(obj, where)
        if pid in scores and scores[pid] != risk:
            raise ValidationInputError(f"{where}: patient {pid!r} is scored twice with different risks")
        scores[pid] = risk
        if model and model not in models:
            models.append(model)
    if not scores:
        raise ValidationInputError(f"{path.name}: no scores; run `steph-client score` first")
    return scores, models


SURVIVAL_YEARS = (1, 3, 5)
YEAR_DAYS = 365.0


def read_survival(path: str | Path) -> dict[int, dict[str, float]]:
    """{years: {patient id: predicted S(years)}} for 1, 3, 5 years from the same scores file (CSV/JSONL columns
    surv_1y, surv_3y, surv_5y; FHIR components survival-1y, …). Years the file lacks are left out."""
    path = Path(path)
    out: dict[int, dict[str, float]] = {y: {} for y in SURVIVAL_YEARS}
    with open(path, newline="", encoding="utf-8") as f:
        first = f.readline()
        f.seek(0)
        rows: list[dict[str, Any]] = ([json.loads(line) for line in f if line.strip()] if first.lstrip().startswith("{")
                                      else [_csv_row(r) for r in csv.DictReader(f)])  # fmt: skip
    for obj in rows:
        if obj.get("resourceType") == "Observation":
            pid = str(obj.get("subject", {}).get("identifier", {}).get("value", ""))
            for comp in obj.get("component", []):
                codes = [c.get("code", "") for c in comp.get("code", {}).get("coding", [])]
                for y in SURVIVAL_YEARS:
                    if f"survival-{y}y" in codes and "valueQuantity" in comp:
                        out[y][pid] = float(comp["valueQuantity"]["value"])
            continue
        for y in SURVIVAL_YEARS:
            value = obj.get(f"surv_{y}y")
            if value not in (None, ""):
                x = float(value)
                if math.isfinite(x):
                    out[y][str(obj.get("patient_id"))] = x
    return {y: v for y, v in out.items() if v}


def kaplan_meier_at(time: list[float], event: list[int], t: float) -> float:
    """Product-limit estimate of S(t) (events at t count; censorings at t are still at risk at t)."""
    s = 1.0
    for u in sorted({ti for ti, ei in zip(time, event, strict=True) if ei and ti <= t}):
        at_risk = sum(ti >= u for ti in time)
        deaths = sum(ti == u and ei for ti, ei in zip(time, event, strict=True))
        s *= 1.0 - deaths / at_risk
    return s


def calibration(survival: dict[int, dict[str, float]], outcomes: dict[str, tuple[float, int]]) -> list[dict[str, Any]]:
    """Calibration in the large at 1, 3, 5 years: mean predicted S(t) vs the Kaplan–Meier S(t) of the same
    patients; a year past the longest follow-up is reported with observed None."""
    rows = []
    for years, by_pid in sorted(survival.items()):
        ids = [p for p in by_pid if p in outcomes]
        if not ids:
            continue
        time = [outcomes[p][0] for p in ids]
        event = [outcomes[p][1] for p in ids]
        t = years * YEAR_DAYS
        observed = kaplan_meier_at(time, event, t) if t <= max(time) else None
        predicted = sum(by_pid[p] for p in ids) / len(ids)
        rows.append({"years": years, "patients": len(ids), "predicted_mean": predicted, "observed_km": observed,
                     "difference": None if observed is None else predicted - observed})  # fmt: skip
    return rows


def read_outcomes(path: str | Path) -> tuple[dict[str, tuple[float, int]], dict[str, str]]:
    """{patient id: (t days, e)} from a CSV with patient_id, t, e (a patient's first row counts), and
    {pathology_id: patient id} when the file has a pathology_id column (the cohort labels.csv layout)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("patient_id", "t", "e") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValidationInputError(
                f"{path.name}: missing column(s) {', '.join(missing)}; the header needs patient_id, t (days), e (0/1)"
            )
        out: dict[str, tuple[float, int]] = {}
        slides: dict[str, str] = {}
        for n, row in enumerate(reader, start=2):
            where = f"{path.name} line {n}"
            pid = (row["patient_id"] or "").strip()
            slide = (row.get("pathology_id") or "").strip()
            if slide and pid:
                slides.setdefault(slide, pid)
            if not pid or pid in out:
                continue
            t = _number(row["t"], "t", where)
            if t <= 0:
                raise ValidationInputError(f"{where}: t = {row['t']}; follow-up must be > 0 days")
            if (row["e"] or "").strip() not in ("0", "1", "0.0", "1.0"):
                raise ValidationInputError(f"{where}: e = {row['e']!r}; use 1 for an observed event, 0 for censored")
            out[pid] = (t, int(float(row["e"])))
    if not out:
        raise ValidationInputError(f"{path.name}: no labelled patients")
    return out, slides


def by_patient(scores: dict[str, float], outcomes: dict[str, tuple[float, int]],
               slides: dict[str, str]) -> tuple[dict[str, float], str]:  # fmt: skip
    """Scores keyed by patient id: as they are when their ids are patient ids, else (ids that are slide ids,
    as a folder of one bag per slide gives) the mean risk of each patient's scored slides."""
    direct = sum(p in outcomes for p in scores)
    via_slides = sum(p in slides for p in scores)
    if direct >= via_slides:
        return scores, "patient_id"
    grouped: dict[str, list[float]] = {}
    for sid, risk in scores.items():
        if sid in slides:
            grouped.setdefault(slides[sid], []).append(risk)
    return {p: sum(r) / len(r) for p, r in grouped.items()}, "pathology_id (mean risk over a patient's slides)"


def comparable_pairs(time: list[float], event: list[int], risk: list[float]) -> list[tuple[int, int, float]]:
    """(i, j, score) for every comparable pair: e_i = 1 and (t_i < t_j, or t_i = t_j with j censored);
    score 1 if r_i > r_j, ½ if |r_i − r_j| ≤ 1e-8, else 0 (scikit-survival's rules)."""
    pairs = []
    n = len(time)
    for i in range(n):
        if not event[i]:
            continue
        for j in range(n):
            if time[j] > time[i] or (time[j] == time[i] and not event[j]):
                d = risk[i] - risk[j]
                pairs.append((i, j, 0.5 if abs(d) <= TIED_TOL else (1.0 if d > 0 else 0.0)))
    return pairs


def bootstrap_c(pairs: list[tuple[int, int, float]], n: int, *, n_boot: int, seed: int) -> list[float]:
    """Sorted C-indices of `n_boot` patient resamples (multiplicities w): Σ w_i w_j s_ij / Σ w_i w_j over the
    comparable pairs; resamples without a comparable pair are dropped."""
    rng = random.Random(seed)
    boots: list[float] = []
    for _ in range(max(0, n_boot)):
        w = [0] * n
        for _ in range(n):
            w[rng.randrange(n)] += 1
        num = den = 0.0
        for i, j, s in pairs:
            wij = w[i] * w[j]
            if wij:
                num += wij * s
                den += wij
        if den > 0:
            boots.append(num / den)
    return sorted(boots)


def validate(
    scores: dict[str, float], outcomes: dict[str, tuple[float, int]], *, n_boot: int = 200, seed: int = 0,
    model_ids: list[str] | None = None,
) -> ValidationResult:  # fmt: skip
    """Harrell's C of the risks on the patients in both inputs, with a bootstrap 95% interval."""
    ids = sorted(p for p in scores if p in outcomes)  # by id: the bootstrap (seeded) must not depend on row order
    if len(ids) < 2:
        raise ValidationInputError(
            f"only {len(ids)} patient(s) are both scored and labelled; check that the patient ids match"
        )
    time = [outcomes[p][0] for p in ids]
    event = [outcomes[p][1] for p in ids]
    pairs = comparable_pairs(time, event, [scores[p] for p in ids])
    if not pairs:
        raise ValidationInputError(
            "no comparable pairs: a pair needs a patient with an event whose follow-up is shorter than another "
            "patient's; more patients or more observed events are needed"
        )
    c = sum(s for _, _, s in pairs) / len(pairs)
    low = high = None
    boots = bootstrap_c(pairs, len(ids), n_boot=n_boot, seed=seed)
    if boots:
        low = boots[min(len(boots) - 1, int(0.025 * len(boots)))]
        high = boots[min(len(boots) - 1, int(math.ceil(0.975 * len(boots))) - 1)]
    return ValidationResult(
        c_index=c, pairs=len(pairs), patients=len(ids), events=sum(event), ci_low=low, ci_high=high,
        n_boot=len(boots), scored_not_labelled=sum(p not in outcomes for p in scores),
        labelled_not_scored=sum(p not in scores for p in outcomes), model_ids=list(model_ids or []),
    )  # fmt: skip
