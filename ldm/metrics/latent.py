"""Latent-space structure: marginal statistics, distance to the prior, interpolation smoothness, cycle error."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch


def channel_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of latents (N, C, h, w)."""
    flat = z.transpose(0, 1).reshape(z.shape[1], -1).double()
    return flat.mean(1), flat.std(1)


def gaussian_kl_to_prior(z: torch.Tensor) -> float:
    """Mean over latent dimensions of KL(N(m_d, v_d) || N(0, 1)), each marginal fitted by its moments."""
    flat = z.flatten(1).double()
    m, v = flat.mean(0), flat.var(0).clamp_min(1e-12)
    return float((0.5 * (m ** 2 + v - 1 - v.log())).mean())


@torch.no_grad()
def interpolate(decode: Callable, z_a: torch.Tensor, z_b: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """Decoded K-step linear interpolations between latent pairs: (M, K + 1, C, H, W)."""
    if steps < 2:
        raise ValueError("interpolation needs at least 2 steps")
    ts = torch.linspace(0, 1, steps + 1, dtype=z_a.dtype, device=z_a.device)
    path = torch.stack([(1 - t) * z_a + t * z_b for t in ts], 1)  # (M, K+1, C, h, w)
    images = decode(path.flatten(0, 1))
    return images.reshape(len(z_a), steps + 1, *images.shape[1:])


@torch.no_grad()
def path_metrics(features: Callable, frames: torch.Tensor) -> dict[str, float]:
    """Consecutive-frame feature distances along interpolation paths (M, K + 1, C, H, W).

    interp_ppl: mean over paths and steps of ||f(x_{k+1}) - f(x_k)||^2 / eps^2 with eps = 1/K (PPL-style,
    Karras et al., 2019). interp_uniformity: max step / mean step per path, averaged (1 = evenly spaced;
    large = a jump on the way, i.e. a hole or discontinuity in the latent space).
    """
    m, k1 = frames.shape[:2]
    f = features(frames.flatten(0, 1)).double().reshape(m, k1, -1)
    d = (f[:, 1:] - f[:, :-1]).norm(dim=-1)  # (M, K)
    eps = 1.0 / (k1 - 1)
    return {"interp_ppl": float((d ** 2).mean() / eps ** 2),
            "interp_uniformity": float((d.max(1).values / d.mean(1).clamp_min(1e-12)).mean())}


@torch.no_grad()
def cycle_error(encode: Callable, decode: Callable, z: torch.Tensor) -> float:
    """Mean relative error ||E(D(z)) - z|| / ||z||: does the encoder find the latent its decoder was given?"""
    z2 = encode(decode(z))
    return float(((z2 - z).flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1).clamp_min(1e-12)).mean())


def latent_summary(raw: torch.Tensor, scaled: Optional[torch.Tensor] = None) -> dict[str, float]:
    """Flat metric dict: overall std, per-channel raw (and scaled) mean/std, KL of scaled marginals to N(0, I)."""
    scaled = raw if scaled is None else scaled
    out = {"std": float(raw.double().std()), "scaled_std": float(scaled.double().std()),
           "kl_to_prior": gaussian_kl_to_prior(scaled)}
    for name, z in (("raw", raw), ("scaled", scaled)):
        mean, std = channel_stats(z)
        for c in range(len(mean)):
            out[f"{name}_ch{c}_mean"], out[f"{name}_ch{c}_std"] = float(mean[c]), float(std[c])
    return out


# ---- metrics that decide the claims (C1 rate, C2 decoder smoothness, C3 aggregate posterior) ---------------------
def _log_normal(z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag std^2) summed over dimensions; z (M, D), mu/std (N, D) -> (M, N).

    The squared Mahalanobis terms expand into two matmuls (sum z^2/s^2 - 2 z.mu/s^2 + sum mu^2/s^2), so memory
    stays at (M, N) however large D is (a 4x8x8 latent has D = 256)."""
    inv = std.pow(-2)                                                          # (N, D)
    quad = z.pow(2) @ inv.T - 2 * z @ (mu * inv).T + (mu.pow(2) * inv).sum(1)  # (M, N)
    const = -0.5 * z.shape[1] * math.log(2 * math.pi)
    return const - std.log().sum(1) - 0.5 * quad.clamp_min(0)


@torch.no_grad()
def aggregate_posterior_kl(mu: torch.Tensor, std: Optional[torch.Tensor], samples: int = 2000,
                           seed: int = 0) -> dict[str, float]:
    """KL(q(z) || N(0, I)) of the aggregate posterior q(z) = 1/N sum_i N(mu_i, diag std_i^2), in the raw latent
    space (C3: does the encoder's distribution match the prior a VAE is trained towards?).

    - `agg_kl`: Monte Carlo, E_q[log q(z) - log p(z)] over `samples` draws from q, with log q(z) evaluated
      exactly as the log-mean-exp over all N components: unbiased for the N-component mixture. As an estimate
      for the population's aggregate posterior it runs high when the posteriors are narrow next to the spacing
      of the N means (the mixture is spikier than what it samples); tests check it against closed forms.
    - `agg_kl_gauss`: the moment-matched version, KL(N(m, S) || N(0, I)) with m, S the mean and covariance of
      q (S = cov(mu) + mean(diag std^2)); no mixture, no bias, blind to non-Gaussian shape.
    `std` None (deterministic encoders: ae, identity) treats q as the empirical distribution of the means, for
    which only the moment-matched KL is defined.
    """
    mu = mu.flatten(1).double()
    n, d = mu.shape
    var = std.flatten(1).double().pow(2) if std is not None else torch.zeros_like(mu)
    m = mu.mean(0)
    cov = torch.cov(mu.T).reshape(d, d) + torch.diag(var.mean(0)) if n > 1 else torch.diag(var.mean(0))
    cov = cov + 1e-9 * torch.eye(d, dtype=cov.dtype)
    gauss = 0.5 * (torch.trace(cov) + m @ m - d - torch.logdet(cov))
    out = {"agg_kl_gauss": float(gauss), "agg_kl_gauss_per_dim": float(gauss) / d}
    if std is None:
        return out
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (samples,), generator=g)
    sd = var.sqrt().clamp_min(1e-12)
    z = mu[idx] + sd[idx] * torch.randn(samples, d, generator=g, dtype=mu.dtype)
    log_q = torch.logsumexp(_log_normal(z, mu, sd), dim=1) - math.log(n)
    log_p = -0.5 * d * math.log(2 * math.pi) - 0.5 * z.pow(2).sum(1)
    kl = float((log_q - log_p).mean())
    out.update({"agg_kl": kl, "agg_kl_per_dim": kl / d})
    return out


def rate(mu: torch.Tensor, std: Optional[torch.Tensor]) -> Optional[float]:
    """Mean KL(q(z|x) || N(0, I)) per image in bits: the rate of a Gaussian encoder (C1, the x-axis of a
    rate-distortion curve across beta); None for deterministic encoders, whose rate is unbounded."""
    if std is None:
        return None
    mu, var = mu.flatten(1).double(), std.flatten(1).double().pow(2).clamp_min(1e-24)
    kl_nats = 0.5 * (mu.pow(2) + var - 1 - var.log()).sum(1)
    return float(kl_nats.mean() / math.log(2))


@torch.no_grad()
def decoder_smoothness(decode: Callable, z: torch.Tensor, rel_eps: float = 0.05, directions: int = 4,
                       seed: int = 0) -> dict[str, float]:
    """Pixel-space decoder smoothness (C2): ||D(z + delta) - D(z)|| / ||delta|| for small random delta.

    delta has a random direction and norm `rel_eps` times the typical latent norm (the mean ||z||), so every
    row is probed at the same relative scale; the ratio estimates the Jacobian's action on random directions
    (sqrt(||J||_F^2 / dim) in expectation for a linear decoder). Reports the mean, the 90th percentile and their
    ratio (large = a few places where the decoder jumps, i.e. a discontinuity)."""
    g = torch.Generator().manual_seed(seed)
    base = decode(z)
    scale = rel_eps * float(z.flatten(1).norm(dim=1).mean())
    ratios = []
    for _ in range(directions):
        u = torch.randn(z.shape, generator=g, dtype=z.dtype).to(z.device)
        u = u / u.flatten(1).norm(dim=1).view(-1, *[1] * (z.dim() - 1)) * scale
        ratios.append((decode(z + u) - base).flatten(1).double().norm(dim=1) / scale)
    r = torch.cat(ratios).cpu()
    mean, p90 = float(r.mean()), float(r.quantile(0.9))
    return {"smoothness": mean, "smoothness_p90": p90, "smoothness_spread": p90 / max(mean, 1e-12)}


def path_length_ratio(frames: torch.Tensor) -> float:
    """Pixel path length of decoded linear interpolations (M, K + 1, ...) over the endpoints' pixel distance,
    averaged over paths (1 = the decoded path is a straight line in pixels; large = detours or jumps)."""
    f = frames.flatten(2).double()
    length = (f[:, 1:] - f[:, :-1]).norm(dim=-1).sum(1)
    direct = (f[:, -1] - f[:, 0]).norm(dim=-1).clamp_min(1e-12)
    return float((length / direct).mean())


def matched_prior_std(z: torch.Tensor) -> float:
    """The latents' own global std: prior FID at matched scale decodes N(0, s^2 I) with it, so a latent that is
    Gaussian but not unit-scale is not punished for its scale (raw N(0, I) measures the mismatch as well)."""
    return float(z.double().std())


@torch.no_grad()
def random_codes(z: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n codes off the data manifold (C2 at random codes): drawn from the Gaussian with the latents' own
    per-dimension mean and std, so every row is probed at its own scale (a VAE's N(0, I) prior would favour the
    VAE) but not at encoded points, where any decoder is trained to be well behaved."""
    flat = z.flatten(1).double()
    g = torch.Generator().manual_seed(seed)
    draws = flat.mean(0) + flat.std(0) * torch.randn(n, flat.shape[1], generator=g, dtype=flat.dtype)
    return draws.to(z.dtype).reshape(n, *z.shape[1:])


# ---- what an encoder keeps (C4: BiGAN/ALI encoders keep semantics, not pixels) ---------------------------------
def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = train.flatten(1).double(), test.flatten(1).double()
    m, s = a.mean(0), a.std(0).clamp_min(1e-8)
    return (a - m) / s, (b - m) / s


@torch.no_grad()
def random_projection(train: torch.Tensor, test: torch.Tensor, dim: int,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels of both splits through one fixed random Gaussian matrix to `dim` dimensions: the control an
    encoder's probe must beat (C4). A random 32-d projection of digits already reads the class by 1-NN at ~0.97,
    so 'the encoder keeps semantics' means a gain over this, not a probe above chance."""
    a, b = train.flatten(1).double(), test.flatten(1).double()
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(a.shape[1], dim, generator=g, dtype=a.dtype) / math.sqrt(dim)
    return a @ w, b @ w


@torch.no_grad()
def probe_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                   test_labels: torch.Tensor, ridge: float = 1e-2) -> dict[str, float]:
    """How well the labels can be read off representations (latents E(x), or pixels for the pixel baseline),
    fitted on `train` and scored on `test`, both standardised with the train statistics:

    - `probe_1nn`: 1-nearest-neighbour accuracy (Euclidean), the measure the BiGAN audit used;
    - `probe_linear`: a linear probe, the closed-form ridge classifier (least squares on one-hot targets with a
      bias, penalty `ridge` x n on the weights; argmax), deterministic and solver-free, as in the
      representation-learning papers' linear evaluation but without their SGD.
    """
    a, b = _standardise(train, test)
    ya, yb = train_labels.long(), test_labels.long()
    nearest = torch.cdist(b, a).argmin(1)
    out = {"probe_1nn": float((ya[nearest] == yb).double().mean())}
    classes = int(max(ya.max(), yb.max())) + 1
    xa = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
    xb = torch.cat([b, torch.ones(len(b), 1, dtype=b.dtype)], 1)
    target = torch.nn.functional.one_hot(ya, classes).double()
    reg = ridge * len(a) * torch.eye(xa.shape[1], dtype=a.dtype)
    reg[-1, -1] = 0.0  # the bias is not penalised
    w = torch.linalg.solve(xa.T @ xa + reg, xa.T @ target)
    out["probe_linear"] = float(((xb @ w).argmax(1) == yb).double().mean())
    return out


@torch.no_grad()
def cycle_correlation(encode: Callable, decode: Callable, z: torch.Tensor) -> float:
    """corr(E(G(z)), z): the Pearson correlation of each latent dimension with its re-encoding, averaged over
    dimensions (1 = E inverts G on the prior; ~0 = the encoder's output carries nothing of the z it was given;
    BiGAN's objective makes E and G inverses at its optimum, Donahue et al., 2017, Theorem 2). A dimension that
    either side holds constant counts as 0."""
    z2 = encode(decode(z)).flatten(1).double().cpu()
    z1 = z.flatten(1).double().cpu()
    a, b = z1 - z1.mean(0), z2 - z2.mean(0)
    denom = a.norm(dim=0) * b.norm(dim=0)
    corr = torch.where(denom > 1e-12, (a * b).sum(0) / denom.clamp_min(1e-12), torch.zeros_like(denom))
    return float(corr.mean())
