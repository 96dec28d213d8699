"""Mode coverage from the evaluator's class probabilities."""

from __future__ import annotations


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
