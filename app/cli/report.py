"""`steph report`: the model report (KM by risk group, calibration, AUC/Brier, comparison, sources) offline.

    steph report --model model.safetensors --target target.safetensors --cohort cohort_dir --out report.html
                 [--groups 2|3|4] [--patient ID] [--figures DIR] [--bootstrap 1000]

The reference ("the target's own model") is the target checkpoint scored as a plain ABMIL; the held-out
patients are the cohort's test split (the train split gives the censoring distribution of AUC/Brier).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import app
from app.cli.common import CliError, cohort_samples, emit, load_model, sha256_file


def _meta(args: argparse.Namespace, loaded_provenance: dict[str, Any], model: Any) -> dict[str, Any]:
    from app.services.report_data import static_weights

    cfg = model.artifact_config() if hasattr(model, "artifact_config") else {}
    params = cfg.get("params") or {}
    sources = list(getattr(model, "source_names", []) or [])
    target = Path(args.target).stem
    train = loaded_provenance.get("train") or {}
    return {
        "model": {"id": Path(args.model).name, "name": None, "target": target, "sources": sources},
        "method": model.method,
        "params": params,
        "training": {"steps": train.get("step_losses"), "epochs": train.get("history")},
        "provenance": {
            **loaded_provenance,
            "report_inputs": {
                "model": {"name": Path(args.model).name, "sha256": sha256_file(args.model)},
                "target": {"name": Path(args.target).name, "sha256": sha256_file(args.target)},
                "cohort": Path(args.cohort).name,
            },
        },
        "software_version": app.__version__,
        "static_weights": static_weights(model.method, params, target, sources),
    }


def cmd_report(args: argparse.Namespace) -> int:
    from app.io.artifacts import load_any_model
    from app.reports.document import FIGURES, build_figures, render_html
    from app.reports.render import to_bytes
    from app.services.report_data import compute_report_data

    if args.groups not in (2, 3, 4):
        raise CliError(f"--groups must be 2 (median split), 3 (tertiles) or 4 (quartiles); got {args.groups}")
    if not Path(args.model).is_file():
        raise CliError(f"model {Path(args.model).name!r} does not exist (looked for {args.model})")
    loaded = load_any_model(args.model)
    model = loaded.model.eval()
    reference = load_model(args.target, what="target checkpoint (--target)")
    if reference.dims.in_dim != model.dims.in_dim:
        raise CliError(f"the target checkpoint has D = {reference.dims.in_dim}, the model D = {model.dims.in_dim}")
    provenance = dict(loaded.provenance or {})
    seed = args.seed if args.seed is not None else int(provenance.get("seed", 0) or 0)  # the job's, as the API
    data = compute_report_data(
        model=model, reference=reference, n_boot=args.bootstrap, seed=seed,
        train_samples=cohort_samples(args.cohort, "train", model.dims.in_dim),
        test_samples=cohort_samples(args.cohort, "test", model.dims.in_dim),
    )  # fmt: skip
    meta = _meta(args, provenance, model)
    figures = build_figures(data, meta, n_groups=args.groups, patient=args.patient)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, meta, figures), encoding="utf-8")
    written = {}
    if args.figures:
        folder = Path(args.figures)
        folder.mkdir(parents=True, exist_ok=True)
        for name, fig in figures.items():
            for fmt in ("png", "svg"):
                (folder / f"{name}.{fmt}").write_bytes(to_bytes(fig.figure, fmt))
            written[name] = [str(folder / f"{name}.png"), str(folder / f"{name}.svg")]
    emit({
        "out": str(out), "figures": [n for n in FIGURES if n in figures], "files": written,
        "comparison": data["comparison"], "patients": len(data["test"]["time"]),
    })  # fmt: skip
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write a model's HTML report (KM, calibration, AUC/Brier, comparison)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", required=True, help="model artifact (.safetensors from `steph merge` or the API)")
    p.add_argument("--target", required=True, help="the target cancer's own checkpoint (the reference model)")
    p.add_argument("--cohort", required=True, help="cohort directory (labels.csv, splits.csv with train,test)")
    p.add_argument("--out", required=True, help="output HTML file (self-contained)")
    p.add_argument("--groups", type=int, default=2, help="risk groups: 2 median, 3 tertiles, 4 quartiles")
    p.add_argument("--patient", help="held-out patient id for the per-patient curve (default: the first)")
    p.add_argument("--figures", metavar="DIR", help="also write every figure as PNG and SVG into DIR")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=None,
                   help="bootstrap seed (default: the merge job's seed from the model's provenance, else 0: the "
                   "same resamples as the service's report)")  # fmt: skip
    p.set_defaults(func=cmd_report)
