"""Does STEPH's merge collapse to θ₀? ReLU weights (preset `paper`) vs softplus weights (default), 5 init seeds.

    python -m bench.regimes_collapse --regime paper --world shared --world-seed 0 --seeds 0 1 2 3 4

Uses the world and checkpoints of bench.regimes (cached in bench/out/regimes-cache when a run made them). For
every init seed s (TrainConfig.seed = s: the hypernetworks' initialisation, the shuffle and dropout) and both
presets: the share of positive w entries and of bags with Σw = 0 on the train bags at initialisation, then the
same after training with the MERGE settings, and the test C-index. One JSON line per (preset, seed).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from bench.regimes import REGIMES, inputs_for, merge_config, prepare
from bench.reproduction import c_index_of


def positive_share(model, samples) -> float:
    with torch.no_grad():
        ws = [model.hyper(s.bag).weights for s in samples]
    return float(torch.cat([(w > 0).float() for w in ws]).mean())


def main(argv: list[str] | None = None) -> int:
    from app.domain.merging.mix_stats import merge_statistics
    from app.domain.merging.steph import StephMethod
    from app.domain.training import train

    p = argparse.ArgumentParser(prog="python -m bench.regimes_collapse")
    p.add_argument("--regime", choices=list(REGIMES), default="paper")
    p.add_argument("--world", choices=["shared", "control"], default="shared")
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    reg = REGIMES[args.regime]
    prep = prepare(reg, args.world_seed, args.world == "control")
    target = reg.targets[0]
    train_s, test_s = prep["data"][target]
    method = StephMethod()
    for seed in args.seeds:
        for preset in ("paper", "default"):
            config = merge_config(seed)
            model = method.build(inputs_for(prep, target), method.parse_params({"preset": preset}), seed=seed).eval()
            init = merge_statistics(model, train_s)
            row = {"regime": reg.name, "world": args.world, "world_seed": args.world_seed, "seed": seed,
                   "preset": preset, "init_positive_w": positive_share(model, train_s),
                   "init_zero_w_bags": init["zero_w_bags"], "init_collapsed": init["collapsed"]}  # fmt: skip
            train(model, train_s, config)
            end = merge_statistics(model, train_s)
            row.update(positive_w=positive_share(model, train_s), zero_w_bags=end["zero_w_bags"],
                       collapsed=end["collapsed"], c_index=c_index_of(model, test_s)["c_index"])  # fmt: skip
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
