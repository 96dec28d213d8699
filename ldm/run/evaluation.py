"""Evaluate a trained run: reconstruction, latent structure, generation (docs/metrics.md) + figures.

Takes the models as callables/objects with the autoencoder interface; shared by train.py (end of run)
and evaluate.py (a finished run from its checkpoints).

Why this module is long: it is the one place that decides which metric is computed on which tensors, in
which order (the order fixes every random draw, so a result is reproducible bit for bit); each step is a
function of its own (`references`, `reconstruction`, `latent_structure`, `prior`, `generation`), and
the metrics themselves live in `ldm.metrics`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from ldm.autoencoders.base import Autoencoder
from ldm.data.base import batches
from ldm.metrics.evaluator import ChannelEvaluator, Evaluator
from ldm.metrics.features import FeatureMetrics, fid_between
from ldm.metrics.figures import class_histogram_plot, latent_histograms
from ldm.metrics.floors import floor_metrics, generated_distribution
from ldm.metrics.generation import class_coverage, class_histogram, mode_coverage, stacked_modes
from ldm.metrics.latent import (
    aggregate_posterior_kl,
    cycle_correlation,
    cycle_error,
    decoder_smoothness,
    interpolate,
    latent_summary,
    matched_prior_std,
    path_length_ratio,
    path_metrics,
    probe_accuracy,
    random_codes,
    random_projection,
    rate,
)
from ldm.metrics.memorisation import memorisation_metrics
from ldm.metrics.reconstruction import chroma, fidelity_warnings, per_image_metrics
from ldm.utils.config import build, plain
from ldm.utils.images import save_grid
from ldm.utils.progress import progress

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def recon_grid(x: torch.Tensor, x_hat: torch.Tensor, path: Path, cols: int = 8, rows: int = 4) -> None:
    """Rows alternate real and reconstructed test images."""
    parts = []
    for r in range(rows):
        sl = slice(r * cols, (r + 1) * cols)
        if len(x[sl]) < cols:
            break
        parts += [x[sl], x_hat[sl]]
    if parts:
        save_grid(torch.cat(parts), path, nrow=cols, rows=["real", "recon"] * (len(parts) // 2),
                  title="test images and their reconstructions")


def upgrade_metrics(cfg: dict, defaults: Optional[dict] = None) -> dict:
    """A metrics config as an older run saved it, in today's form; today's passes unchanged. The upgrades:
    feature extractors became `_target_`s (`features: evaluator` with the recipe under `evaluator`, or
    `features: inception`); keys added since the run (e.g. `eval_batch`, `probe_n`, `floor_seed`) take their value
    from `defaults`, today's composed `metrics` config (the YAML: the one place a default is written)."""
    cfg = {**(defaults or {}), **cfg}
    features = cfg.get("features")
    if isinstance(features, str):
        cfg = dict(cfg)
        recipe = cfg.pop("evaluator", {}) or {}
        cfg["features"] = ({"_target_": "ldm.metrics.evaluator.EvaluatorFeatures", **recipe} if features == "evaluator"
                           else {"_target_": "ldm.metrics.inception.InceptionFeatures"})
    return cfg


def feature_metrics(cfg: dict, datamodule: Any, data_cfg: dict, cache_dir: str, device: torch.device):
    """(FeatureMetrics against the whole train split, the evaluator or None) for `metrics.features`.

    The extractor comes from its `_target_`; one that is an `Evaluator` also gives classes (coverage,
    class accuracy of reconstructions)."""
    extractor = build(cfg["features"])(datamodule, data_cfg, cache_dir, device)
    train = images_of(datamodule.split("train"), cfg["eval_batch"])
    fm = FeatureMetrics(extractor.features, extractor.feature_dim, train,
                        kid_subsets=cfg["kid_subsets"], kid_subset_size=cfg["kid_subset_size"], prdc_k=cfg["prdc_k"])
    return fm, extractor if isinstance(extractor, Evaluator) else None


def images_of(split: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """A split's images, batch by batch."""
    return (x for x, _ in batches(split, batch_size))


@dataclass
class Context:
    """What every evaluation step reads: the config, the data, the feature metrics (or None) and where to write."""

    cfg: dict
    datamodule: Any
    data_cfg: Optional[dict]
    out_dir: Path
    device: torch.device
    seed: int
    n: int  # generated / prior samples
    test: Any
    fm: Optional[FeatureMetrics] = None
    evaluator: Optional[Evaluator] = None
    real_test: Optional[torch.Tensor] = None  # the test split's features


@torch.no_grad()
def evaluate(ae: Any, ld: Optional[Any], datamodule: Any, cfg: dict, data_cfg: dict, cache_dir: str,
             out_dir: Path, device: torch.device) -> dict:
    """All metrics (docs/metrics.md) that apply to these models; writes recon/samples/interpolation/hist figures.

    The steps run in a fixed order (each returns its metrics): the feature reference and floors, reconstruction,
    latent structure, the decoder's prior, generation, memorisation. Real images are read a batch at a time
    (`ldm.data.base.batches`) and every image set is embedded once; only latents, features and the generated
    samples are held whole.
    """
    cfg = plain(cfg) or {}
    ctx = Context(cfg, datamodule, plain(data_cfg), Path(out_dir), device, int(cfg["seed"]), 0,
                  datamodule.split("test"))
    ae.to(device).eval()
    m = references(ctx, cache_dir)
    z_test = z_std = None
    if isinstance(ae, Autoencoder) and len(ctx.test):
        recon, z_test, z_std = reconstruction(ctx, ae)
        m.update(recon)
    else:
        log.info("evaluation: %s cannot encode, skipping reconstruction and encoder-based latent metrics",
                 type(ae).__name__)
    if z_test is not None:
        m.update(latent_structure(ctx, ae, ld, z_test, z_std))
    if ctx.fm is not None:
        m.update(prior(ctx, ae, z_test))
    if ld is not None:
        gen, images, feats = generation(ctx, ld)
        m.update(gen)
        if cfg["memorisation"]:
            with_feats = (feats, ctx.fm.real, ctx.real_test) if ctx.fm is not None else None
            m.update(memorisation(images, datamodule, ctx.out_dir, with_feats, cfg["eval_batch"]))
    return m


def references(ctx: Context, cache_dir: str) -> dict:
    """The feature extractor and its reference (the train split), the test split's features, the sample count
    and the real-data floors at that count; fills `ctx`."""
    m: dict = {}
    if ctx.cfg["features"]:
        ctx.fm, ctx.evaluator = feature_metrics(ctx.cfg, ctx.datamodule, ctx.data_cfg, cache_dir, ctx.device)
        if ctx.evaluator is not None:
            m["eval/evaluator_acc"] = ctx.evaluator.accuracy
            if isinstance(ctx.evaluator, ChannelEvaluator):
                m["eval/evaluator_channel_acc"] = ctx.evaluator.channel_accuracy
        m["eval/reference_n"] = len(ctx.fm.real)
        ctx.real_test = ctx.fm.embed(images_of(ctx.test, ctx.cfg["eval_batch"]))
    ctx.n = int(ctx.cfg["num_samples"] or len(ctx.test))
    m["eval/num_samples"] = ctx.n
    if ctx.fm is not None:
        m.update(cached_floors(ctx.fm, ctx.real_test, ctx.test, ctx.datamodule, ctx.evaluator, ctx.n, ctx.cfg,
                               floor_seed(ctx.cfg), ctx.data_cfg, cache_dir))
    return m


def reconstruction(ctx: Context, ae: Any) -> tuple[dict, torch.Tensor, Optional[torch.Tensor]]:
    """Pixel, feature and class fidelity of E then D on the test split; (metrics, test latents, their stds)."""
    fm, evaluator, device, test, batch = ctx.fm, ctx.evaluator, ctx.device, ctx.test, ctx.cfg["eval_batch"]
    m: dict = {}
    per: dict[str, list] = {}
    latents, stds, recon_feats, correct, grid, encode_s = [], [], [], 0, None, 0.0
    labelled = bool((test.labels >= 0).all())
    for x, y in progress(batches(test, batch), desc="reconstructing", total=-(-len(test) // batch)):
        x_hat = ae.reconstruct(x.to(device)).float().cpu().clamp(-1, 1)
        for k, v in per_image_metrics(x_hat, x).items():
            per.setdefault(k, []).append(v)
        if x.shape[1] == 3:  # colour kept? (the per-dataset check below)
            per.setdefault("chroma", []).append(chroma(x_hat))
            per.setdefault("chroma_real", []).append(chroma(x))
        t0 = time.perf_counter()
        mean, std = ae.encode_distribution(x.to(device))
        encode_s += time.perf_counter() - t0
        latents.append(mean.float().cpu())
        stds.append(std.float().cpu() if std is not None else None)
        if fm is not None:
            recon_feats.append(fm.embed(x_hat))
        if evaluator is not None and labelled:
            correct += evaluator.accuracy_on(x_hat, y) * len(y)
        grid = grid or (x, x_hat)
    m.update({f"recon/{k}": torch.cat(v).double().mean().item() for k, v in per.items()})
    m["recon/encode_sec_per_image"] = encode_s / len(test)  # what per-image refinement (gan_inversion) costs
    if "recon/chroma" in m:
        m["recon/chroma_ratio"] = m["recon/chroma"] / max(m["recon/chroma_real"], 1e-8)
    for warning in fidelity_warnings(m, (ctx.data_cfg or {}).get("recon_check"), ae.latent_shape, grid[0].shape[-1]):
        log.warning("recon check: %s", warning)
    if fm is not None:
        m["recon/rfid"] = fm.fid(torch.cat(recon_feats))
    if evaluator is not None and labelled:
        # semantics, not pixels (C4): the evaluator's accuracy on the reconstructions; identity gives its own
        m["recon/class_accuracy"] = correct / len(test)
    recon_grid(*grid, ctx.out_dir / "recon.png")
    z_std = torch.cat(stds) if stds and all(s is not None for s in stds) else None
    return m, torch.cat(latents), z_std


def latent_structure(ctx: Context, ae: Any, ld: Optional[Any], z_test: torch.Tensor,
                     z_std: Optional[torch.Tensor]) -> dict:
    """The encoder's latent: its distribution against N(0, I) (C3), what it keeps (C4: cycles, label probes), its
    rate (C1), the decoder's smoothness and interpolations (C2)."""
    cfg, device, seed, test, datamodule = ctx.cfg, ctx.device, ctx.seed, ctx.test, ctx.datamodule
    m: dict = {}
    scaled = ld.scale(z_test.to(ld.latent_scale.device)).cpu() if ld is not None else z_test / z_test.std()
    m.update({f"latent/{k}": v for k, v in latent_summary(z_test, scaled).items()})
    latent_histograms(scaled, ctx.out_dir / "latent_hist.png",
                      title=f"{type(ae).__name__}: scaled test latents vs N(0, 1)")
    m["latent/cycle_error"] = cycle_error(ae.encode, ae.decode, z_test.to(device))
    # C4: what the encoder keeps. E inverts G on the prior? labels readable off E(x) (semantics)?
    z_cycle = torch.randn((min(int(cfg["cycle_n"]), len(z_test)), *ae.latent_shape),
                          generator=torch.Generator().manual_seed(seed))
    m["latent/cycle_corr"] = cycle_correlation(ae.encode, ae.decode, z_cycle.to(device))
    train = datamodule.split("train")
    if len(train) and bool((train.labels >= 0).all()) and bool((test.labels >= 0).all()):
        z_train = torch.cat([ae.encode_distribution(x.to(device))[0].float().cpu()
                             for x, _ in batches(train, cfg["eval_batch"])])
        m.update({f"latent/{k}": v for k, v in
                  probe_accuracy(z_train, train.labels, z_test, test.labels).items()})
        # the control the probe must beat (C4): the pixels through a random projection of the latent's dimension
        px = [torch.cat([x.flatten(1).float() for x, _ in batches(s, cfg["eval_batch"])]) for s in (train, test)]
        rp = random_projection(*px, dim=z_test[0].numel(), seed=seed)
        for k, v in probe_accuracy(rp[0], train.labels, rp[1], test.labels).items():
            m[f"latent/{k}_random_projection"] = v
            m[f"latent/{k}_gain"] = m[f"latent/{k}"] - v  # what the encoder adds over the random projection
    # C1 / C3 in the raw latent space: the rate, and how close the aggregate posterior is to N(0, I)
    if (bits := rate(z_test, z_std)) is not None:
        m["latent/rate"] = bits
    m.update({f"latent/{k}": v for k, v in aggregate_posterior_kl(z_test, z_std, seed=seed).items()})
    # C2 in pixel space: how much the decoder's output moves per unit latent step, and its spread
    probe = z_test[torch.randperm(len(z_test), generator=torch.Generator().manual_seed(seed))[:int(cfg["probe_n"])]]
    m.update({f"latent/{k}": v for k, v in decoder_smoothness(ae.decode, probe.to(device), seed=seed).items()})
    # ... and off the data manifold, at random codes of the latents' own per-dimension scale (C2 where it bites)
    z_rand = random_codes(z_test, int(cfg["probe_n"]), seed=seed)
    m.update({f"latent/{k}_random": v for k, v in decoder_smoothness(ae.decode, z_rand.to(device), seed=seed).items()})
    pairs = min(int(cfg["interp_pairs"]), len(z_test) // 2)
    if pairs >= 1:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(z_test), generator=g)[:2 * pairs]
        frames = interpolate(ae.decode, z_test[perm[:pairs]].to(device), z_test[perm[pairs:]].to(device),
                             steps=int(cfg["interp_steps"])).clamp(-1, 1).cpu()
        steps = frames.shape[1]
        save_grid(frames[:8].flatten(0, 1), ctx.out_dir / "interpolation.png", nrow=steps,
                  cols=["z_a"] + [""] * (steps - 2) + ["z_b"],
                  title="decoded linear interpolations between test latents")
        m["latent/path_length_ratio"] = path_length_ratio(frames)
        ends = random_codes(z_test, 2 * pairs, seed=seed + 1)  # paths between random codes, off the manifold
        m["latent/path_length_ratio_random"] = path_length_ratio(
            interpolate(ae.decode, ends[:pairs].to(device), ends[pairs:].to(device),
                        steps=int(cfg["interp_steps"])).clamp(-1, 1).cpu())
        if ctx.fm is not None:  # feature-space path metrics (the evaluator's features, not pixels)
            m.update({f"latent/{k}": v for k, v in path_metrics(ctx.fm.features, frames).items()})
    return m


def prior(ctx: Context, ae: Any, z_test: Optional[torch.Tensor]) -> dict:
    """The decoder's own prior samples D(z), z ~ N(0, I): their FID and class/mode coverage (C5 for a plain GAN),
    and the same draws at the encoder latents' own scale."""
    fm, device, batch = ctx.fm, ctx.device, int(ctx.cfg["eval_batch"])
    m: dict = {}
    g = torch.Generator().manual_seed(ctx.seed + 1)
    z_prior = torch.randn((ctx.n, *ae.latent_shape), generator=g)
    prior_feats = fm.embed(ae.decode(z.to(device)).float().cpu().clamp(-1, 1) for z in z_prior.split(batch))
    m["latent/prior_fid"] = fm.fid(prior_feats)
    if ctx.evaluator is not None:  # does the decoder's own prior cover the classes / modes (C5 for a plain GAN)?
        m.update({f"latent/prior_{k}": v for k, v in coverage(ctx.evaluator, prior_feats).items()})
    if z_test is not None:  # the same draws at the latents' own scale: a Gaussian latent of another scale
        s = matched_prior_std(z_test)
        m["latent/prior_std"] = s
        m["latent/prior_fid_matched"] = fm.fid(fm.embed(ae.decode((s * z).to(device)).float().cpu().clamp(-1, 1)
                                                        for z in z_prior.split(batch)))
    return m


def generation(ctx: Context, ld: Any) -> tuple[dict, torch.Tensor, Optional[torch.Tensor]]:
    """Stage 2's samples: speed, FID/KID/PRDC against the train split, against held-out images and over subsets,
    class and mode coverage; (metrics, the samples, their features or None)."""
    cfg, fm, evaluator, device, n = ctx.cfg, ctx.fm, ctx.evaluator, ctx.device, ctx.n
    m: dict = {}
    ld.to(device).eval()
    _sync(device)
    t0 = time.perf_counter()
    images, nfe = ld.generate(n, seed=ctx.seed, batch_size=int(cfg["batch_size"]), show=True)
    _sync(device)
    m["gen/sec_per_sample"] = (time.perf_counter() - t0) / max(1, n)
    m["gen/nfe"] = nfe
    save_grid(images[:64], ctx.out_dir / "samples.png", nrow=8,
              title=f"stage-2 samples, {nfe} network evaluations each")
    feats = None
    if fm is not None:
        feats = fm.embed(images)
        scores = fm.all(feats)
        m["eval/prdc_k"] = scores.pop("prdc_k")  # clamped below the sample count where that is small
        m.update({f"gen/{k}": v for k, v in scores.items()})
        m["gen/fid_heldout"] = fid_between(feats, ctx.real_test)  # against held-out images, not the train split
        sub = int(cfg["subset_n"] or 0)
        if sub and len(feats) >= 2 * sub:
            m.update(generated_distribution(fm, feats, sub, int(cfg["floor_subsets"]), ctx.seed))
        if evaluator is not None:
            probs = evaluator.probs_from_features(feats)
            cov = class_coverage(probs)
            m.update({f"gen/{k}": cov[k] for k in ("classes_covered", "class_kl", "confidence")})
            real_probs = evaluator.probs_from_features(ctx.real_test)
            if isinstance(evaluator, ChannelEvaluator):  # stacked data: modes, per-channel classes
                m.update(stacked_modes(evaluator, probs, real_probs, ctx.datamodule, ctx.out_dir))
            else:
                class_histogram_plot(class_histogram(probs), ctx.out_dir / "class_hist.png",
                                     real=class_histogram(real_probs), names=ctx.datamodule.class_names,
                                     title=f"{cov['classes_covered']}/{cov['num_classes']} classes covered, "
                                           f"KL to uniform {cov['class_kl']:.3f}")
    return m, images, feats


def floors(fm: FeatureMetrics, real_test: torch.Tensor, test: Any, datamodule: Any, evaluator: Optional[Evaluator],
           n: int, cfg: dict, seed: int) -> dict:
    """The real-data floor of every feature metric over random held-out subsets of the generated set's size,
    stratified to the train split's class proportions (ldm.metrics.floors), drawn from every image no stage
    trained on (test + val: with the test split alone, n = its size leaves one possible subset); says so when
    there are fewer held-out images than samples."""
    val = datamodule.split("val")
    if len(val):
        real_test = torch.cat([real_test, fm.embed(images_of(val, cfg["eval_batch"]))])
    all_labels = torch.cat([test.labels, val.labels]) if len(val) else test.labels
    labels = all_labels if bool((all_labels >= 0).all()) else None
    train_labels = datamodule.split("train").labels
    proportions = torch.bincount(train_labels).double() if bool((train_labels >= 0).all()) else None
    classes = (lambda f: coverage(evaluator, f)) if evaluator is not None else None
    m = floor_metrics(fm, real_test, labels, n, int(cfg["floor_subsets"]), seed, proportions, classes)
    m["eval/fid_floor_n"] = m["eval/floor_n"]
    if not m["eval/floor_equal_n"]:
        log.warning("floors: %d samples but only %d held-out images: the floor is one draw at n=%d, so FIDs of the "
                    "samples and the floor are at different n (read them against each other with care)",
                    n, len(real_test), len(real_test))
    return m


def floor_seed(cfg: dict) -> int:
    """The seed of the floors' subset draws: metrics.floor_seed (fixed by default, so every seed of a sweep shares
    one floor), or the run's seed where it is null."""
    return int(cfg["seed"] if cfg.get("floor_seed") is None else cfg["floor_seed"])


def cached_floors(fm: FeatureMetrics, real_test: torch.Tensor, test: Any, datamodule: Any,
                  evaluator: Optional[Evaluator], n: int, cfg: dict, seed: int, data_cfg: Optional[dict],
                  cache_dir: Optional[str]) -> dict:
    """`floors`, computed once per (data, feature extractor, n, seed, metric settings, code) and reused from the
    cache by every other run that shares them: the floor is a property of the data, not of the model, so the rows
    of a sweep need it once (at 5,000 samples it took ~4 of a job's 6 evaluation minutes). With metrics.floor_seed
    fixed (the default) that is once for all seeds; with floor_seed=null once per run seed."""
    if not cache_dir or data_cfg is None:
        return floors(fm, real_test, test, datamodule, evaluator, n, cfg, seed)
    from ldm.metrics.evaluator import IGNORED_DATA_KEYS
    from ldm.utils import cache
    from ldm.utils.io import read_json, write_json

    settings = {k: cfg.get(k) for k in ("features", "floor_subsets", "kid_subsets", "kid_subset_size", "prdc_k")}
    parts = {"data": {k: v for k, v in data_cfg.items() if k not in IGNORED_DATA_KEYS}, "metrics": settings,
             "n": n, "seed": seed}
    entry = cache.Entry(cache_dir, "floors", cache.key(parts))
    with entry.locked():
        found = entry.load("floors.json", read_json)
        if found is not None:
            log.info("floors: from the cache (%s)", entry.dir)
            return found
        m = floors(fm, real_test, test, datamodule, evaluator, n, cfg, seed)
        entry.publish({"floors.json": lambda tmp: write_json(tmp, m)}, {"n": n, "seed": seed})
    return m


def coverage(evaluator: Evaluator, feats: torch.Tensor) -> dict:
    """Classes covered and KL to uniform of a feature set's predicted classes; for stacked data also the modes
    covered by the VEEGAN/PacGAN rule."""
    probs = evaluator.probs_from_features(feats)
    cov = class_coverage(probs)
    out = {"classes_covered": cov["classes_covered"], "class_kl": cov["class_kl"]}
    if isinstance(evaluator, ChannelEvaluator):
        modes = mode_coverage(probs.argmax(1), probs.shape[1])
        out.update({"modes_covered": modes["modes_covered"], "mode_kl": modes["mode_kl"]})
    return out


def memorisation(images: torch.Tensor, datamodule: Any, out_dir: Path,
                 feats: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], batch_size: int) -> dict:
    """Copy rates of the samples against the train split, calibrated on the test split (ldm.metrics.memorisation),
    in pixels and, with `feats` = (samples, train, test) features, in the evaluator's features."""
    train = torch.cat(list(images_of(datamodule.split("train"), batch_size)))
    heldout = torch.cat(list(images_of(datamodule.split("test"), batch_size)))
    return memorisation_metrics(images.float().cpu(), train, heldout, out_dir, feats)
