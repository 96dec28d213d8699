"""The dataset table (docs/datasets.md): split sizes, the evaluator's test accuracy and the real-data FID floor at n
held-out images (median and 5-95 % range over random subsets), for each dataset named on the command line.

    python -m ldm.run.data_stats textures stacked_digits digits [--n 1000] [--subsets 20]

Uses the default evaluator recipe and the shared evaluator cache (.cache/evaluator), so it trains an evaluator
only where none is cached for that data config.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def compose(data: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = hydra_compose(config_name="train", overrides=[f"data={data}"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(ROOT / "logs" / "data_stats")
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    GlobalHydra.instance().clear()
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="+", help="data config names (conf/data/)")
    p.add_argument("--n", type=int, default=1000, help="held-out images per floor subset")
    p.add_argument("--subsets", type=int, default=20)
    args = p.parse_args(argv)
    os.environ.setdefault("LDM_ROOT", str(ROOT))
    import torch

    from ldm.data.base import batches
    from ldm.metrics.evaluator import ChannelEvaluator, load_or_train
    from ldm.metrics.features import FeatureMetrics
    from ldm.metrics.floors import subset_distribution
    from ldm.utils.config import build, plain

    torch.set_num_threads(1)
    print(f"| data | train / val / test | classes | evaluator test acc. | FID floor, n={args.n} "
          f"(median [5-95 %] over {args.subsets} subsets) | FID, whole test split |")
    print("| --- | --- | --- | --- | --- | --- |")
    for data in args.data:
        cfg = compose(data)
        recipe = {k: v for k, v in plain(cfg.metrics.features).items() if k != "_target_"}
        dm = build(cfg.data)
        dm.setup()
        ev = load_or_train(dm, plain(cfg.data), recipe, cfg.paths.cache_dir)
        fm = FeatureMetrics(ev.features, ev.feature_dim, (x for x, _ in batches(dm.split("train"))), kid_subsets=10,
                            kid_subset_size=1000, prdc_k=5)
        test = fm.embed(x for x, _ in batches(dm.split("test")))
        acc = f"{ev.accuracy:.3f}" + (f" ({ev.channel_accuracy:.3f} per channel)"
                                      if isinstance(ev, ChannelEvaluator) else "")
        if len(test) >= args.n:
            d = subset_distribution(lambda idx: {"fid": fm.fid(test[idx])}, len(test), args.n, args.subsets, 0)["fid"]
            floor = f"{d['median']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"
        else:
            floor = f"(only {len(test)} held-out test images)"
        sizes = " / ".join(f"{len(dm.split(k)):,}" for k in ("train", "val", "test"))
        print(f"| `{data}` | {sizes} | {dm.num_classes:,} | {acc} | {floor} | {fm.fid(test):.3f} (n={len(test):,}) |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
