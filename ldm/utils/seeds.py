"""Seeds derived from a run's seed and a counter (epoch, step, rank): the mixing constants, named once.

Every random draw during training is a pure function of these, which is what makes a resumed run
bit-identical to an uninterrupted one and makes runs with different seeds draw different streams.
"""

SEED_STRIDE = 1_000_003  # a prime larger than any epoch or step count: runs with different seeds never share a seed
RANK_STRIDE = 1009       # separates the ranks of one step (more ranks than this would collide)
VALIDATION_SEED = 10_000  # validation draws (t, noise) from its own stream, the same at every validation


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling permutation of one epoch of training batches."""
    return seed * SEED_STRIDE + epoch


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """All noise drawn in one training step on one rank (posterior samples, t and eps, dropout)."""
    return epoch_seed(seed, step) * RANK_STRIDE + rank


def normal_like(x):
    """N(0, 1) noise of x's shape, dtype and device, drawn as a contiguous tensor: the same numbers whatever
    x's memory format (`torch.randn_like` follows it, so channels_last would change the random stream)."""
    import torch

    return torch.randn(x.shape, dtype=x.dtype, device=x.device)
