"""Pick the bench learning rate on a tuning world that the table never uses (seed 100), for the BASELINE only.

    python -m bench.tune_lr [--lrs 5e-4 1e-3 2e-3 4e-3] [--cancers 6]

For each lr: cancer-specific ABMILs trained from θ₀ (bench settings otherwise) on the first `--cancers`
cancers of the seed-100 shared world; prints their mean test C-index. The chosen lr is then used for every
method in the reproduction table, so the choice cannot favour STEPH: it only keeps the cancer-specific
baseline from being under-trained.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from bench.reproduction import BenchConfig, train_config, world_config


def main(argv: list[str] | None = None) -> int:
    from dataclasses import replace

    from app.domain.evaluation import evaluate
    from app.domain.mil import FamilyDims, new_abmil
    from app.domain.survival import default_bin_edges
    from app.domain.synthetic import make_world
    from app.domain.training import train_cancer_specific

    p = argparse.ArgumentParser(prog="python -m bench.tune_lr")
    p.add_argument("--lrs", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3, 4e-3])
    p.add_argument("--cancers", type=int, default=6)
    p.add_argument("--seed", type=int, default=100)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = BenchConfig()
    world = make_world(world_config(cfg, args.seed, control=False))
    dims = FamilyDims(in_dim=cfg.dim, hidden_dim=cfg.hidden, attn_dim=cfg.attn, n_bins=cfg.n_bins)
    edges = default_bin_edges(cfg.n_bins)
    base = new_abmil(dims, args.seed).state_dict()
    for lr in args.lrs:
        tcfg = train_config(replace(cfg, lr=lr), args.seed)
        scores = []
        for name in list(world.cancers)[: args.cancers]:
            cohort = world.cancers[name]
            model = train_cancer_specific(base, cohort.samples("train"), tcfg, dims=dims, bin_edges=edges)
            scores.append(evaluate(model, cohort.samples("test")).c_index)
        print(f"lr {lr:g}: mean cancer-specific test C {statistics.fmean(scores):.4f}  "
              f"({' '.join(f'{s:.3f}' for s in scores)})", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
