"""Mode coverage from the evaluator's class probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def class_coverage(probs: torch.Tensor) -> dict[str, float]:
    """Classes covered, KL(class histogram || uniform) and mean confidence of predicted classes.

    A class counts as covered when it receives at least half its uniform share of the samples.
    """
    n, k = probs.shape
    pred = probs.argmax(1)
    hist = torch.bincount(pred, minlength=k).double() / n
    covered = int((hist >= 0.5 / k).sum())
    nz = hist[hist > 0]
    kl = float((nz * (nz * k).log()).sum())
    return {"classes_covered": covered, "class_kl": kl, "confidence": float(probs.max(1).values.mean()),
            "num_classes": k}


def class_histogram(probs: torch.Tensor) -> torch.Tensor:
    """Fraction of samples predicted as each class."""
    return torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double() / len(probs)


def mode_coverage(pred: torch.Tensor, k: int) -> dict[str, float]:
    """The stacked-MNIST protocol of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018) on predicted
    modes `pred` (N,) out of `k`: a mode counts as covered when at least one sample is predicted as it;
    KL(mode histogram || uniform) in nats.

    Unlike `class_coverage`'s half-share rule, one sample suffices, so the count depends on the number of samples
    (those papers use 26,000 for 1,000 modes): compare runs at equal `metrics.num_samples`.
    """
    n = len(pred)
    hist = torch.bincount(pred, minlength=k).double() / max(1, n)
    nz = hist[hist > 0]
    return {"modes_covered": int((hist > 0).sum()), "mode_kl": float((nz * (nz * k).log()).sum()), "num_modes": k}


def stacked_modes(evaluator: Any, probs: torch.Tensor, real_probs: torch.Tensor, datamodule: Any,
                  out_dir: Path) -> dict:
    """Stacked data (a `ChannelEvaluator`): modes covered and KL to uniform by the VEEGAN/PacGAN rule, for the
    samples and for as many real test images (a fixed random subset when the test split is larger; all of it,
    `eval/real_modes_n`, when smaller); class_hist.png with per-channel classes."""
    from ldm.metrics.figures import channel_histogram_plot

    k, n = probs.shape[1], len(probs)
    if len(real_probs) > n:  # the count of covered modes grows with n: compare at equal n
        real_probs = real_probs[torch.randperm(len(real_probs), generator=torch.Generator().manual_seed(0))[:n]]
    gen, real = mode_coverage(probs.argmax(1), k), mode_coverage(real_probs.argmax(1), k)

    def per_channel(p: torch.Tensor) -> torch.Tensor:
        classes = evaluator.channels_of(p.argmax(1))
        return torch.stack([torch.bincount(classes[:, c], minlength=evaluator.channel_classes).double() / len(p)
                            for c in range(evaluator.channels)])

    channel_histogram_plot(per_channel(probs), Path(out_dir) / "class_hist.png", real=per_channel(real_probs),
                           names=getattr(datamodule, "channel_class_names", None),
                           channel_names=["R", "G", "B"] if evaluator.channels == 3 else None,
                           modes=class_histogram(probs), real_modes=class_histogram(real_probs),
                           title=f"{gen['modes_covered']}/{gen['num_modes']} modes covered (real test "
                                 f"{real['modes_covered']}), KL to uniform {gen['mode_kl']:.3f} "
                                 f"(real {real['mode_kl']:.3f})")
    return {"gen/modes_covered": gen["modes_covered"], "gen/mode_kl": gen["mode_kl"],
            "eval/real_modes_covered": real["modes_covered"], "eval/real_mode_kl": real["mode_kl"],
            "eval/real_modes_n": len(real_probs), "eval/num_modes": gen["num_modes"]}
