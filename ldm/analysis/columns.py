"""What a table column means: which direction is better, and whether a row's value can compete in it."""

from __future__ import annotations

HIGHER_IS_BETTER = ("psnr", "ssim", "precision", "recall", "coverage", "density", "classes_covered", "modes_covered",
                    "accuracy", "confidence", "evaluator_acc")


LOWER_IS_BETTER = ("mse", "fid", "kid", "kl", "ppl", "uniformity", "cycle_error", "wall_s", "sec_per_sample",
                   "val_loss")



def direction(column: str) -> int:
    """+1 if higher is better, -1 if lower, 0 if neither is clear."""
    name = column.split("/")[-1]
    if any(name.endswith(h) or name == h for h in HIGHER_IS_BETTER):
        return 1
    if any(k in name for k in LOWER_IS_BETTER):
        return -1
    return 0



def contends(column: str, runs: list[dict]) -> bool:
    """Whether a row's value in `column` measures something it can be best at: not the wall time of a stage
    that came from the cache or a checkpoint (not timed here), not the reconstruction of a row with nothing to
    reconstruct through (identity's exact, sentinel-PSNR reconstruction)."""
    stage = column.split("/")[0]
    if column.endswith("wall_s") and stage in ("stage1", "stage2"):
        return all(m.get(f"{stage}/source", "trained") in ("trained", "resumed") for m in runs)
    if column.startswith("recon/") or column == "latent/cycle_error":
        return not all(m.get("stage1/params") == 0 for m in runs)
    return True
