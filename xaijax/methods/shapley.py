"""Shapley-value and ablation methods: GradientSHAP, DeepLIFT-SHAP, Kernel SHAP, Shapley value
sampling and feature ablation.

They explain ``S_c(x)`` against a reference ``b``: the gradient ones (``gradient_shap``,
``deeplift_shap``) per input element, averaged over a *distribution* of baselines; the
perturbation ones (``kernel_shap``, ``shapley_sampling``, ``feature_ablation``) per feature
group, the superpixels or grid cells of :func:`xaijax.methods.perturbation.resolve_segments`
(``segments=`` / ``num_segments=`` as LIME), one value per group broadcast to its pixels.

Every stochastic method takes a ``key`` (split per image) and also accepts its random draws
explicitly (``draws=``, ``samples=``, ``permutations=``), which is how the tests give Captum and
xaijax identical draws. Model evaluations run in chunks (``lax.map`` / ``lax.scan`` over a
``vmap``, static ``batch_size`` / ``internal_batch_size``), so memory is one chunk whatever the
number of samples, permutations or features.

References:
  Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017 (Shapley
  values Eq. 8, Kernel SHAP Theorem 2, Deep SHAP §4.2); Castro, Gómez & Tejada, "Polynomial
  calculation of the Shapley value based on sampling", Computers & OR 2009; Štrumbelj &
  Kononenko, "An efficient explanation of individual classifications using game theory", JMLR
  2010; Erion et al., "Improving performance of deep learning models with axiomatic attribution
  priors and expected gradients", Nature MI 2021 (expected gradients); Zeiler & Fergus 2014.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods import perturbation as P
from xaijax.methods.base import (SCORES, Explanation, check_choice, check_positive_int,
                                 class_scores, draw_dtype, info, input_gradient, logits_fn,
                                 register, require_model, target_scores)
from xaijax.methods.gradient import chunked_sum, heatmap_sum, per_item
from xaijax.methods.masks import split_key
from xaijax.sharding import merge_inner, split_inner

Array = jax.Array


# ------------------------------------------------------------------------------------------------
# shared pieces


def _scalar(v: Any, name: str, method: str) -> float:
    a = np.asarray(v)
    if a.ndim != 0:
        raise ValueError(f"method {method!r}: {name} must be a scalar; got shape {a.shape}")
    return float(a)


def _baseline_set(baselines: Optional[Array], x: Array, method: str) -> Array:
    """The baseline distribution as ``(B, H, W, C)``: ``None`` is the one all-zero image,
    ``(H, W, C)`` one baseline, ``(B, H, W, C)`` B of them."""
    shape = x.shape[1:]
    if baselines is None:
        return jnp.zeros((1,) + shape, x.dtype)
    b = jnp.asarray(baselines, x.dtype)
    if b.shape == shape:
        return b[None]
    if b.ndim != 4 or b.shape[1:] != shape:
        raise ValueError(f"method {method!r}: baselines must be one image {shape} or a "
                         f"distribution (B, {', '.join(map(str, shape))}) shared by the batch; "
                         f"got shape {tuple(b.shape)}")
    return b


def _check_baselines(opts, x, method: str) -> None:
    b = opts.get("baselines")
    if b is not None:
        shape = tuple(np.shape(b))
        if shape != tuple(x.shape[1:]) and (len(shape) != 4 or shape[1:] != tuple(x.shape[1:])):
            raise ValueError(f"method {method!r}: baselines must be one image "
                             f"{tuple(x.shape[1:])} or a distribution (B, "
                             f"{', '.join(map(str, x.shape[1:]))}); got shape {shape}")
        if len(shape) == 4 and shape[0] < 1:
            raise ValueError(f"method {method!r}: the baseline distribution is empty")


def _groups(x, segments, num_segments, segmentation, compactness, slic_iterations):
    """``(segs (N, H, W), K, onehot (N, H, W, K))``."""
    segs, k = P.resolve_segments(x, segments, num_segments, segmentation, compactness,
                                 slic_iterations)
    return segs, k, jax.nn.one_hot(segs, k, dtype=x.dtype)


def _coalition_scores(f, x, base, target, onehot, zs, batch_size, score, progress=False,
                      desc="") -> Array:
    """``(N, S)`` class scores of each image ``x[i]`` with the groups of each row of ``zs[i]``
    ``(S, K)`` kept and the rest set to ``base[i]`` (``onehot`` ``(N, H, W, K)``),
    ``batch_size`` coalitions of every image per model call, one model batch
    (:func:`xaijax.sharding.merge_inner`: split over the devices when a sharded call has fewer
    images than devices); a bar ``desc`` of the chunks with ``progress``."""
    n = x.shape[0]

    def chunk(idx):  # (B,) coalition indices -> (B, N) scores
        xp = jax.vmap(P.coalition_images, out_axes=1)(x, base, onehot, zs[:, idx])
        t = merge_inner(jnp.broadcast_to(target, (idx.shape[0], n)))
        return split_inner(class_scores(f(merge_inner(xp)), t, score), idx.shape[0])

    return jnp.moveaxis(P._chunked(chunk, zs.shape[1], batch_size, progress, desc), 1, 0)


def _validate_groups(method: str):
    """Validator of the feature-group methods: score, batch size, sample counts, segments."""

    def validate(model, x, opts) -> None:
        if "score" in opts:
            check_choice(opts["score"], SCORES, "score", method)
        if "batch_size" in opts:
            check_positive_int(opts["batch_size"], "batch_size", method,
                               "perturbed images per model call")
        if "num_samples" in opts:
            check_positive_int(opts["num_samples"], "num_samples", method)
        if "segmentation" in opts:
            check_choice(opts["segmentation"], P._SEGMENTATIONS, "segmentation", method)
        if "num_segments" in opts:
            check_positive_int(opts["num_segments"], "num_segments", method,
                               "number of feature groups")
        P.check_segment_labels(opts)
        if "constraint" in opts:
            check_choice(opts["constraint"], KERNEL_CONSTRAINTS, "constraint", method)
        perms = opts.get("permutations")
        if perms is not None and not isinstance(perms, jax.core.Tracer):
            p = np.asarray(perms)
            if p.ndim in (2, 3) and p.size and not (
                    np.sort(p, axis=-1) == np.arange(p.shape[-1])).all():
                raise ValueError(f"method {method!r}: every row of permutations must be a "
                                 f"permutation of 0..{p.shape[-1] - 1}")
        if "baseline" in opts and isinstance(opts["baseline"], str):
            raise ValueError(f"method {method!r}: baseline must be a number or an array "
                             f"broadcastable to x; got {opts['baseline']!r}")

    return validate


# ------------------------------------------------------------------------------------------------
# GradientSHAP


class GradientShapDraws(NamedTuple):
    """The random draws of :func:`gradient_shap` for ``N`` images and ``n`` samples each.

    Attributes:
      index: ``(N, n)`` int32, which baseline of the distribution each sample uses.
      alpha: ``(N, n)`` in [0, 1), the position on the path from the baseline to the input.
      noise: ``(N, n, H, W, C)`` standard-normal draws (multiplied by ``stdev``).
    """

    index: Array
    alpha: Array
    noise: Array


def gradient_shap_draws(key: Optional[Array], x: Array, n_samples: int,
                        num_baselines: int) -> GradientShapDraws:
    """Draws for :func:`gradient_shap`: the key is split per image, then into the baseline
    indices (uniform over ``num_baselines``), the path positions ``α ~ U(0, 1)`` and the
    Gaussian noise, so every image gets its own draws.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> d = gradient_shap_draws(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3)), 5, 3)
      >>> d.index.shape, d.alpha.shape, d.noise.shape
      ((2, 5), (2, 5), (2, 5, 8, 8, 3))
    """

    def one(k):
        ki, ka, kn = jax.random.split(k, 3)
        return GradientShapDraws(
            jax.random.randint(ki, (n_samples,), 0, num_baselines, jnp.int32),
            jax.random.uniform(ka, (n_samples,), draw_dtype(x)),
            jax.random.normal(kn, (n_samples,) + x.shape[1:], draw_dtype(x)))

    return jax.vmap(one)(split_key(key, x.shape[0]))


NOISE_ON = ("path", "input")


def _validate_gradient_shap(model, x, opts) -> None:
    m = "gradient_shap"
    check_positive_int(opts.get("n_samples", 1), "n_samples", m, "samples per image")
    if opts.get("internal_batch_size") is not None:
        check_positive_int(opts["internal_batch_size"], "internal_batch_size", m,
                           "samples per gradient call")
    check_choice(opts.get("noise_on", "path"), NOISE_ON, "noise_on", m)
    if "stdev" in opts and not _scalar(opts["stdev"], "stdev", m) >= 0:
        raise ValueError(f"method {m!r}: stdev must be >= 0; got {float(opts['stdev']):g}")
    _check_baselines(opts, x, m)
    d = opts.get("draws")
    if d is not None and not any(isinstance(a, jax.core.Tracer) for a in tuple(d)):
        if not isinstance(d, tuple) or len(d) != 3:
            raise ValueError(f"method {m!r}: draws must be a GradientShapDraws(index, alpha, "
                             f"noise) (see gradient_shap_draws); got {type(d).__name__}")
        b = opts.get("baselines")
        nb = 1 if b is None or np.ndim(b) == 3 else np.shape(b)[0]
        idx = np.asarray(d[0])
        if idx.size and (idx.min() < 0 or idx.max() >= nb):
            raise ValueError(f"method {m!r}: draws.index must lie in [0, {nb}) (the number of "
                             f"baselines); got {idx.min()}..{idx.max()}")


@register("gradient_shap", static=("n_samples", "internal_batch_size", "noise_on"),
          signed=True, validate=_validate_gradient_shap,
          paper="Lundberg & Lee 2017, Eq. 8 (SHAP values) by expected gradients "
                "(Erion et al. 2021)",
          peer="Captum GradientShap")
def gradient_shap(model: Any, x: Array, target: Array, *, baselines: Optional[Array] = None,
                  n_samples: int = 5, stdev: Any = 0.0, noise_on: str = "path",
                  key: Optional[Array] = None, draws: Optional[GradientShapDraws] = None,
                  internal_batch_size: Optional[int] = None) -> Explanation:
    """GradientSHAP: expected gradients ``(x − b) ⊙ ∇S_c`` over baselines ``b`` and path points.

    .. math::

        φ(x) = E_{b∼D,\\ α∼U(0,1),\\ ε∼N(0, σ²)}\\big[(x − b) ⊙ ∇S_c(b + α(x − b) + ε)\\big]

    a Monte-Carlo estimate of SHAP values (Lundberg & Lee 2017, Eq. 8, under feature
    independence with the baseline distribution ``D`` as background): Integrated Gradients
    averaged over baselines, with the path integral replaced by one random point per sample
    (Erion et al. 2021, expected gradients; the SHAP library's ``GradientExplainer``, whose
    ``local_smoothing`` is ``σ``). Each of the ``n_samples`` samples of an image draws a
    baseline from ``baselines``, a path position ``α`` and, when ``stdev > 0``, Gaussian noise.
    The estimate satisfies completeness in expectation: ``E[Σ φ] ≈ S_c(x) − E_b[S_c(b)]``
    (``extras["delta"]``).

    Captum's ``GradientShap`` adds the noise to the *input* first and multiplies by the noisy
    difference, ``(x + ε − b) ⊙ ∇S_c(b + α(x + ε − b))`` (its ``NoiseTunnel`` over
    ``InputBaselineXGradient``); ``noise_on="input"`` does that. With ``stdev = 0`` (both
    defaults) the two coincide. Defaults otherwise follow Captum: 5 samples, no noise; Captum
    requires ``baselines``, ours default to the one all-zero image (then GradientSHAP is IG
    with a random quadrature; pass a background set for SHAP values).

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      baselines: the baseline distribution ``(B, H, W, C)`` shared by the batch, or one image
        ``(H, W, C)``; default zeros (traced).
      n_samples: samples per image (static; Captum default 5).
      stdev: standard deviation of the Gaussian noise, absolute, in the units of ``x``
        (Captum's ``stdevs``; default 0).
      noise_on: ``"path"`` (SHAP / expected gradients, default) or ``"input"`` (Captum), static.
      key: PRNG key of the draws (split per image; ``None`` means ``PRNGKey(0)``).
      draws: explicit :class:`GradientShapDraws` used instead of ``key`` (how identical draws
        are fed to Captum in the tests).
      internal_batch_size: samples per gradient call (each call sees ``N · internal_batch_size``
        images; static); default all at once.

    Returns:
      attribution ``(N, H, W, C)``; heatmap its signed channel sum. ``extras``: ``delta``
      ``Σ φ − (S_c(x) − mean_j S_c(b_j))`` per image over the drawn baselines, ``draws``.

    Examples:
      >>> import xaijax as xj, jax, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> bg = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
      >>> ex = xj.explain(m, jnp.ones((2, 32, 32, 3)), 3, method="gradient_shap",
      ...                 baselines=bg, n_samples=4)
      >>> ex.attribution.shape
      (2, 32, 32, 3)

    References:
      Lundberg & Lee 2017, §2 Eq. 8 and §4 (model-specific approximations); Erion et al. 2021
      (expected gradients); Sundararajan et al. 2017 (IG); Captum ``GradientShap``.
    """
    check_positive_int(n_samples, "n_samples", "gradient_shap")
    check_choice(noise_on, NOISE_ON, "noise_on", "gradient_shap")
    f = logits_fn(model)
    bs = _baseline_set(baselines, x, "gradient_shap")
    n = x.shape[0]
    if draws is None:
        draws = gradient_shap_draws(key, x, n_samples, bs.shape[0])
    else:
        draws = GradientShapDraws(jnp.asarray(draws[0], jnp.int32),
                                  jnp.asarray(draws[1], x.dtype),
                                  jnp.asarray(draws[2], x.dtype))
        want = ((n, n_samples), (n, n_samples), (n, n_samples) + x.shape[1:])
        got = tuple(tuple(a.shape) for a in draws)
        if got != want:
            raise ValueError(f"gradient_shap: draws (index, alpha, noise) must have shapes "
                             f"{want} for {n} images and n_samples={n_samples}; got {got}")
    sd = jnp.asarray(stdev, x.dtype)
    chunk = n_samples if internal_batch_size is None else int(internal_batch_size)

    def one(j):  # (K,) sample indices -> (K, N, ...) terms and baseline scores
        b = jnp.swapaxes(bs[draws.index[:, j]], 0, 1)               # (K, N, H, W, C)
        a = draws.alpha[:, j].T[..., None, None, None]
        eps = sd * jnp.swapaxes(draws.noise[:, j], 0, 1)
        if noise_on == "input":
            diff = x + eps - b
            point = b + a * diff
        else:
            diff = x - b
            point = b + a * diff + eps
        g = per_item(lambda z, t: input_gradient(f, z, t), point, target)
        return diff * g, per_item(lambda z, t: target_scores(f(z), t), b, target)

    total, s_b = chunked_sum(one, jnp.arange(n_samples), chunk)
    attr = total / n_samples
    delta = jnp.sum(attr, axis=(1, 2, 3)) - (target_scores(f(x), target) - s_b / n_samples)
    return Explanation(heatmap=heatmap_sum(attr), attribution=attr,
                       extras={"delta": delta, "draws": draws}, target=target,
                       method="gradient_shap")


# ------------------------------------------------------------------------------------------------
# DeepLIFT-SHAP


def _validate_deeplift_shap(model, x, opts) -> None:
    m = "deeplift_shap"
    if opts.get("batch_size") is not None:
        check_positive_int(opts["batch_size"], "batch_size", m, "baselines per DeepLIFT call")
    from xaijax.rules import deeplift as dl_rules

    check_choice(opts.get("rule", "rescale"), dl_rules.RULES, "rule", m)
    check_choice(opts.get("maxpool", "rule"), dl_rules.MAXPOOL_MODES, "maxpool", m)
    _check_baselines(opts, x, m)


@register("deeplift_shap", static=("rule", "maxpool", "batch_size"), needs="rules",
          signed=True, validate=_validate_deeplift_shap,
          paper="Lundberg & Lee 2017, §4.2 (Deep SHAP), Eq. 8", peer="Captum DeepLiftShap")
def deeplift_shap(model: Any, x: Array, target: Array, *, baselines: Optional[Array] = None,
                  rule: str = "rescale", maxpool: str = "rule",
                  batch_size: Optional[int] = None) -> Explanation:
    """DeepLIFT-SHAP: DeepLIFT's contributions averaged over a distribution of references.

    ``φ(x) = (1/B) Σ_b (x − b) ⊙ m(x, b)`` with ``m`` the DeepLIFT multipliers of
    :func:`xaijax.methods.deeplift` for reference ``b``. Lundberg & Lee 2017 (§4.2, Deep SHAP)
    read DeepLIFT's multipliers as a compositional approximation of SHAP values (Eq. 8) for one
    reference, and the expectation over a background set ``D`` as the SHAP values under
    feature independence. Every image is paired with every baseline (Captum ``DeepLiftShap``;
    deterministic: no sampling), ``batch_size`` baselines per DeepLIFT call. Summation-to-delta
    holds on average: ``Σ φ = S_c(x) − mean_b S_c(b)`` (``extras["delta"]`` ≈ 0).

    Captum refuses a single baseline; here ``B = 1`` is allowed (it is DeepLIFT).

    Args:
      model: a zoo :class:`~xaijax.models.Model` (DeepLIFT's rules need its layers).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      baselines: ``(B, H, W, C)`` references shared by the batch, or one ``(H, W, C)``; default
        the all-zero image (traced).
      rule: ``"rescale"`` or ``"reveal_cancel"`` (static; see :func:`deeplift`).
      maxpool: ``"rule"`` or ``"gradient"`` (static; see :func:`deeplift`).
      batch_size: baselines per DeepLIFT call (each call runs ``2N · batch_size`` images);
        default all at once (static).

    Returns:
      attribution ``(N, H, W, C)``; heatmap its signed channel sum; ``extras["delta"]``
      ``Σ φ − (S_c(x) − mean_b S_c(b))`` per image.

    Examples:
      >>> import xaijax as xj, jax, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> bg = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))
      >>> ex = xj.explain(m, jnp.ones((1, 32, 32, 3)), 3, method="deeplift_shap", baselines=bg)
      >>> ex.heatmap.shape
      (1, 32, 32)

    References:
      Lundberg & Lee 2017, §4.2 ("Deep SHAP (DeepLIFT + Shapley values)"); Shrikumar et al.
      2017; Captum ``DeepLiftShap``.
    """
    model = require_model(model, "deeplift_shap", "rule-aware layers")
    bs = _baseline_set(baselines, x, "deeplift_shap")
    nb = bs.shape[0]
    dl = info("deeplift").fn
    chunk = nb if batch_size is None else int(batch_size)

    def one(i):  # (K,) baseline indices -> (K, N, ...) attributions and reference scores
        k = i.shape[0]
        refs = jnp.broadcast_to(bs[i][:, None], (k,) + x.shape)
        ex = dl(model, merge_inner(jnp.broadcast_to(x, refs.shape)),
                merge_inner(jnp.broadcast_to(target, (k,) + target.shape)),
                baseline=merge_inner(refs), rule=rule, maxpool=maxpool)
        return split_inner(ex.attribution, k), split_inner(ex.extras["reference_score"], k)

    total, s_b = chunked_sum(one, jnp.arange(nb), chunk)
    attr = total / nb
    delta = jnp.sum(attr, axis=(1, 2, 3)) - (target_scores(logits_fn(model)(x), target)
                                             - s_b / nb)
    return Explanation(heatmap=heatmap_sum(attr), attribution=attr, extras={"delta": delta},
                       target=target, method="deeplift_shap")


# ------------------------------------------------------------------------------------------------
# Kernel SHAP


KERNEL_CONSTRAINTS = ("exact", "captum")
CAPTUM_INF_WEIGHT = 1e6  # Captum's stand-in for the infinite kernel weight of ∅ and the full set


def shapley_kernel(z: Array) -> Array:
    """The Shapley kernel ``π(z) = (M − 1) / (C(M, |z|)·|z|·(M − |z|))`` of coalitions ``z``
    ``(..., M)`` (Lundberg & Lee 2017, Theorem 2); ``inf`` for ``|z| ∈ {0, M}``.

    Examples:
      >>> import jax.numpy as jnp
      >>> round(float(shapley_kernel(jnp.array([1.0, 0.0, 0.0]))), 5)  # (3-1)/(3·1·2)
      0.33333
    """
    m = z.shape[-1]
    s = jnp.sum(z, axis=-1)
    lg = jax.scipy.special.gammaln
    log_binom = lg(m + 1.0) - lg(s + 1.0) - lg(m - s + 1.0)
    inner = (s > 0) & (s < m)
    safe = jnp.where(inner, s * (m - s), 1.0)
    return jnp.where(inner, (m - 1) / (jnp.exp(log_binom) * safe), jnp.inf)


def kernel_shap_samples(key: Array, num_samples: int, m: int, dtype: Any = jnp.float32
                        ) -> Array:
    """``(num_samples, M)`` 0/1 coalitions drawn from the Shapley kernel: the size ``k ∈ [1, M −
    1]`` with probability ``∝ C(M, k)·π_k = (M − 1)/(k(M − k))``, then a uniformly random
    subset of that size (Captum's sampling; both ``∅`` and the full set are excluded, their
    weight is infinite and they become constraints).

    Examples:
      >>> import jax
      >>> z = kernel_shap_samples(jax.random.PRNGKey(0), 6, 4)
      >>> z.shape, bool(((z.sum(1) >= 1) & (z.sum(1) <= 3)).all())
      ((6, 4), True)
    """
    if m < 2:
        return jnp.ones((num_samples, m), dtype)
    k = np.arange(1, m)
    logits = jnp.asarray(np.log(1.0 / (k * (m - k))), jnp.float32)

    def one(kk):
        ks, kr = jax.random.split(kk)
        size = jax.random.categorical(ks, logits) + 1
        rank = jnp.argsort(jnp.argsort(jax.random.uniform(kr, (m,))))
        return (rank < size).astype(dtype)

    return jax.vmap(one)(jax.random.split(key, num_samples))


def shapley_regression(z: Array, y: Array, w: Array, f_empty: Array, f_full: Array) -> Array:
    """Kernel SHAP's constrained weighted least squares (Lundberg & Lee 2017, Theorem 2).

    Minimises ``Σ_i w_i (y_i − φ₀ − z_i·φ)²`` with the constraints the infinite kernel weight
    of ``∅`` and the full coalition imposes, ``φ₀ = f(∅)`` and ``Σ φ = f(full) − f(∅)``: the
    last value is eliminated, ``φ_M = Δ − Σ_{j<M} φ_j``, and the rest solved by least squares
    (minimum norm where the samples do not determine them). Rows with ``|z| ∈ {0, M}`` are
    dropped (they are the constraints).

    Returns:
      ``φ`` ``(M,)``.
    """
    m = z.shape[1]
    # the regression in float32 at least (the scores of a dtype="bfloat16" model are bfloat16)
    y, f_full, f_empty = (jnp.asarray(v, jnp.promote_types(v.dtype, jnp.float32))
                          for v in (y, jnp.asarray(f_full), jnp.asarray(f_empty)))
    s = jnp.sum(z, axis=1)
    w = jnp.where((s > 0) & (s < m), w, 0.0)
    d = f_full - f_empty
    if m == 1:
        return d[None]
    yt = y - f_empty - z[:, -1] * d
    a = z[:, :-1] - z[:, -1:]
    sw = jnp.sqrt(w)
    beta = jnp.linalg.lstsq(a * sw[:, None], yt * sw)[0]
    return jnp.concatenate([beta, (d - jnp.sum(beta))[None]])


def weighted_least_squares(z: Array, y: Array, w: Array) -> Tuple[Array, Array]:
    """Weighted linear regression with a free intercept, as sklearn ``LinearRegression`` with
    ``sample_weight``: centre by the weighted means, scale rows by ``√w``, minimum-norm least
    squares. Returns ``(β (M,), intercept ())``."""
    y = jnp.asarray(y, jnp.promote_types(y.dtype, jnp.float32))  # float32 for bfloat16 scores
    sw = jnp.sum(w)
    zm = w @ z / sw
    ym = w @ y / sw
    r = jnp.sqrt(w)
    beta = jnp.linalg.lstsq((z - zm) * r[:, None], (y - ym) * r)[0]
    return beta, ym - zm @ beta


@register("kernel_shap", static=("num_samples", "num_segments", "segmentation", "batch_size",
                                 "score", "constraint", "kernel_weights", "slic_iterations",
                                 "progress"),
          signed=True, validate=_validate_groups("kernel_shap"),
          paper="Lundberg & Lee 2017, Theorem 2 (Shapley kernel), Eq. 8",
          peer="Captum KernelShap")
def kernel_shap(model: Any, x: Array, target: Array, *, num_samples: int = 1000,
                num_segments: int = 50, segmentation: str = "slic",
                segments: Optional[Array] = None, samples: Optional[Array] = None,
                baseline: Any = 0.0, constraint: str = "exact", kernel_weights: bool = False,
                compactness=1.0, slic_iterations: int = 10, batch_size: int = 64,
                key: Optional[Array] = None, score: str = "logit",
                progress: bool = False) -> Explanation:
    """Kernel SHAP: Shapley values of feature groups as a weighted linear regression.

    LIME (:func:`xaijax.methods.lime`) with the Shapley kernel: coalitions ``z ∈ {0, 1}^M`` keep
    the groups with ``z_k = 1`` and set the others to ``baseline``; the class scores of those
    images are regressed on ``z`` with weights ``π(z) = (M − 1)/(C(M, |z|)|z|(M − |z|))``, no
    regulariser, and the infinite weight of ``∅`` and of the full coalition turned into the
    constraints ``φ₀ = f(b)``, ``Σ φ = f(x) − f(b)`` (Theorem 2; :func:`shapley_regression`).
    Over all ``2^M`` coalitions the solution is exactly the Shapley values (Eq. 8).

    Coalitions are drawn from the kernel (:func:`kernel_shap_samples`, Captum's sampling:
    size ``∝ (M − 1)/(k(M − k))``, then a random subset), so each sample has weight 1 —
    an unbiased sample of the objective. ``kernel_weights=True`` weights given ``samples`` by
    ``π(z)`` instead (for an enumeration of coalitions or uniform draws).

    Captum ``KernelShap`` approximates the constraints by appending the full and the empty
    coalition as the first two samples with weight 10⁶ and fits a free intercept
    (sklearn ``LinearRegression``); ``constraint="captum"`` does that (``num_samples`` then
    counts those two rows, as Captum's ``n_samples``). The paper's exact constraints are the
    default: they make efficiency exact. Captum's defaults are ``n_samples=25``, baseline 0 and
    one feature per input element; ours are 1000 samples, baseline 0 and 50 superpixels (the
    groups of LIME).

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      num_samples: coalitions per image (static); ignored when ``samples`` is given.
      num_segments, segmentation, segments, compactness, slic_iterations: the feature groups,
        as :func:`xaijax.methods.lime` (``segments``: ``(H, W)`` or ``(N, H, W)`` labels in
        ``[0, num_segments)``, Captum's ``feature_mask``).
      samples: explicit ``(S, M)`` or ``(N, S, M)`` 0/1 coalitions (traced).
      baseline: value of switched-off groups (scalar or broadcastable to ``x``).
      constraint: ``"exact"`` (paper) or ``"captum"`` (static).
      kernel_weights: weight the samples by ``π(z)`` (static; default ``False``: the samples are
        draws from the kernel).
      batch_size: images per model call (static).
      key: PRNG key of the coalitions (split per image; ``None`` means ``PRNGKey(0)``).
      score: ``"logit"`` (Captum), ``"softmax"`` or ``"sigmoid"``.
      progress: show a bar of the chunks of coalitions on stderr (static; :mod:`xaijax.progress`).

    Returns:
      heatmap ``(N, H, W)``: each pixel gets its group's Shapley value. ``extras``: ``values``
      ``(N, M)``, ``base_value`` (``φ₀``, ``(N,)``), ``segments``, ``samples``, ``scores``,
      ``weights``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.explain(m, jnp.ones((1, 32, 32, 3)), 0, method="kernel_shap",
      ...                 num_samples=32, num_segments=16, segmentation="grid")
      >>> ex.extras["values"].shape
      (1, 16)

    References:
      Lundberg & Lee 2017, §4.1 Theorem 2 (Shapley kernel) and Eq. 8; Ribeiro et al. 2016
      (LIME, Eq. 2); Captum ``KernelShap``.
    """
    name = "kernel_shap"
    _validate_groups(name)(model, x, dict(score=score, batch_size=batch_size,
                                          num_samples=num_samples, constraint=constraint))
    n = x.shape[0]
    f = logits_fn(model)
    segs, k, onehot = _groups(x, segments, num_segments, segmentation, compactness,
                              slic_iterations)
    if samples is not None:
        samples = jnp.asarray(samples, x.dtype)
        if samples.ndim not in (2, 3) or samples.shape[-1] != k:
            raise ValueError(f"{name}: samples must have shape (S, {k}) or ({n}, S, {k}) for "
                             f"{k} feature groups; got {tuple(samples.shape)}")
        zs = jnp.broadcast_to(samples, (n,) + samples.shape[-2:])
    else:
        keys = split_key(key, n)
        drawn = num_samples - 2 if constraint == "captum" else num_samples
        if drawn < 0:
            raise ValueError(f"{name}: constraint='captum' needs num_samples >= 2 (the full and "
                             f"the empty coalition come first); got {num_samples}")
        zs = jax.vmap(lambda kk: kernel_shap_samples(kk, drawn, k, x.dtype))(keys)
        if constraint == "captum":
            ends = jnp.stack([jnp.ones((k,), x.dtype), jnp.zeros((k,), x.dtype)])
            zs = jnp.concatenate([jnp.broadcast_to(ends, (n, 2, k)), zs], axis=1)
    base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)

    y = _coalition_scores(f, x, base, target, onehot, zs, batch_size, score, progress,
                          "kernel_shap samples")
    if constraint != "captum":  # the empty and the full coalition: f0, f1 of each image
        ends_z = jnp.stack([jnp.zeros((k,), x.dtype), jnp.ones((k,), x.dtype)])
        f01 = _coalition_scores(f, x, base, target, onehot, jnp.broadcast_to(ends_z, (n, 2, k)),
                                2, score)
    else:
        f01 = jnp.zeros((n, 2), y.dtype)  # unused: the samples hold both ends

    def one(z, y, f01):
        size = jnp.sum(z, axis=1)
        ends = (size == 0) | (size == k)
        w = shapley_kernel(z) if kernel_weights else jnp.ones_like(size)
        if constraint == "captum":
            w = jnp.where(ends, CAPTUM_INF_WEIGHT, w)
            phi, phi0 = weighted_least_squares(z, y, w)
        else:
            w = jnp.where(ends, 0.0, w)
            f0, f1 = f01
            phi, phi0 = shapley_regression(z, y, w, f0, f1), f0
        return phi, phi0, y, w

    phi, phi0, y, w = jax.vmap(one)(zs, y, f01)
    heat = jnp.take_along_axis(phi, segs.reshape(n, -1), axis=1).reshape(segs.shape)
    return Explanation(heatmap=heat, attribution=None,
                       extras={"values": phi, "base_value": phi0, "segments": segs,
                               "samples": zs, "scores": y, "weights": w},
                       target=target, method=name)


# ------------------------------------------------------------------------------------------------
# Shapley value sampling


def sample_permutations(key: Array, num_samples: int, m: int) -> Array:
    """``(num_samples, M)`` int32 uniformly random permutations of ``0..M−1``."""
    return jax.vmap(lambda kk: jax.random.permutation(kk, m))(
        jax.random.split(key, num_samples)).astype(jnp.int32)


def permutation_coalitions(perms: Array, dtype: Any = jnp.float32) -> Array:
    """``(P·M, M)`` coalitions walked by permutations ``(P, M)``: row ``p·M + j`` holds the
    first ``j + 1`` features of permutation ``p`` (the baseline, the empty coalition, is
    evaluated once apart)."""
    p, m = perms.shape
    rank = jnp.argsort(perms, axis=1)                          # rank[p, k]: position of k
    z = rank[:, None, :] <= jnp.arange(m)[None, :, None]       # (P, M steps, M features)
    return z.reshape(p * m, m).astype(dtype)


@register("shapley_sampling", static=("num_samples", "num_segments", "segmentation",
                                      "batch_size", "score", "slic_iterations", "progress"),
          signed=True, validate=_validate_groups("shapley_sampling"),
          paper="Castro et al. 2009, Eq. 2-3 (Štrumbelj & Kononenko 2010); Shapley values as "
                "Lundberg & Lee 2017, Eq. 8",
          peer="Captum ShapleyValueSampling, Captum ShapleyValues")
def shapley_sampling(model: Any, x: Array, target: Array, *, num_samples: int = 25,
                     num_segments: int = 50, segmentation: str = "slic",
                     segments: Optional[Array] = None, permutations: Optional[Array] = None,
                     baseline: Any = 0.0, compactness=1.0, slic_iterations: int = 10,
                     batch_size: int = 64, key: Optional[Array] = None,
                     score: str = "logit", progress: bool = False) -> Explanation:
    """Shapley value sampling: marginal contributions averaged over random feature orders.

    The Shapley value of group ``i`` is the mean over orderings ``π`` of its marginal
    contribution ``v(Pre^i(π) ∪ {i}) − v(Pre^i(π))`` (Castro et al. 2009, Eq. 2; Eq. 8 of
    Lundberg & Lee 2017 in subset form), with ``v(S)`` the class score of the image whose
    groups outside ``S`` are set to ``baseline``. Castro et al.'s estimator (§3, Eq. 3)
    averages it over ``num_samples`` uniformly random orders; walking one order from the
    baseline, adding a group at a time, gives every group's contribution with ``M`` model
    calls (Štrumbelj & Kononenko 2010), ``P·M + 1`` per image in all. Efficiency is exact for
    every set of orders (the contributions of one order telescope to ``v(all) − v(∅) = S_c(x) −
    S_c(b)``); all ``M!`` orders (``permutations=``) give the exact Shapley values.

    Same sampling as Captum ``ShapleyValueSampling`` (default 25 permutations, baseline 0);
    Captum uses one set of permutations for the whole batch, ours are drawn per image from
    ``key`` (pass ``permutations`` to share them). Captum's default feature groups are single
    input elements; ours are LIME's 50 superpixels.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      num_samples: permutations per image (static); ignored when ``permutations`` is given.
      num_segments, segmentation, segments, compactness, slic_iterations: the feature groups,
        as :func:`xaijax.methods.lime`.
      permutations: explicit ``(P, M)`` or ``(N, P, M)`` int orders of the ``M`` groups.
      baseline: value of absent groups (scalar or broadcastable to ``x``).
      batch_size: images per model call (static).
      key: PRNG key of the permutations (split per image; ``None`` means ``PRNGKey(0)``).
      score: ``"logit"`` (Captum), ``"softmax"`` or ``"sigmoid"``.
      progress: show a bar of the chunks of coalitions on stderr (static; :mod:`xaijax.progress`).

    Returns:
      heatmap ``(N, H, W)``: each pixel gets its group's value. ``extras``: ``values`` ``(N,
      M)``, ``segments``, ``permutations`` ``(N, P, M)``, ``delta`` ``Σ φ − (S_c(x) − S_c(b))``
      (0 up to rounding).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.explain(m, jnp.ones((1, 32, 32, 3)), 0, method="shapley_sampling",
      ...                 num_samples=2, num_segments=4, segmentation="grid")
      >>> ex.extras["values"].shape
      (1, 4)

    References:
      Castro, Gómez & Tejada 2009, §2 Eq. 2 and §3 (the estimator, Eq. 3); Štrumbelj &
      Kononenko 2010; Lundberg & Lee 2017, Eq. 8; Captum ``ShapleyValueSampling``.
    """
    name = "shapley_sampling"
    _validate_groups(name)(model, x, dict(score=score, batch_size=batch_size,
                                          num_samples=num_samples))
    n = x.shape[0]
    f = logits_fn(model)
    segs, k, onehot = _groups(x, segments, num_segments, segmentation, compactness,
                              slic_iterations)
    if permutations is not None:
        perms = jnp.asarray(permutations, jnp.int32)
        if perms.ndim not in (2, 3) or perms.shape[-1] != k:
            raise ValueError(f"{name}: permutations must have shape (P, {k}) or ({n}, P, {k}) "
                             f"for {k} feature groups; got {tuple(perms.shape)}")
        perms = jnp.broadcast_to(perms, (n,) + perms.shape[-2:])
    else:
        perms = jax.vmap(lambda kk: sample_permutations(kk, num_samples, k))(split_key(key, n))
    base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)

    p = perms.shape[1]
    zs = jax.vmap(lambda perm: permutation_coalitions(perm, x.dtype))(perms)
    ys = _coalition_scores(f, x, base, target, onehot, zs, batch_size, score, progress,
                           "shapley_sampling coalitions").reshape(n, p, k)
    v0s = _coalition_scores(f, x, base, target, onehot, jnp.zeros((n, 1, k), x.dtype), 1, score)

    def one(perm, y, v0):
        steps = jnp.diff(jnp.concatenate([jnp.broadcast_to(v0, (p, 1)), y], axis=1), axis=1)
        phi = jnp.zeros((k,), steps.dtype).at[perm.reshape(-1)].add(steps.reshape(-1)) / p
        return phi, jnp.sum(phi) - (y[0, -1] - v0[0])

    phi, delta = jax.vmap(one)(perms, ys, v0s)
    heat = jnp.take_along_axis(phi, segs.reshape(n, -1), axis=1).reshape(segs.shape)
    return Explanation(heatmap=heat, attribution=None,
                       extras={"values": phi, "segments": segs, "permutations": perms,
                               "delta": delta},
                       target=target, method=name)


# ------------------------------------------------------------------------------------------------
# Feature ablation


@register("feature_ablation", static=("num_segments", "segmentation", "batch_size", "score",
                                      "slic_iterations"),
          signed=True, validate=_validate_groups("feature_ablation"),
          paper="Zeiler & Fergus 2014, §4.2 (occlusion), by feature groups",
          peer="Captum FeatureAblation")
def feature_ablation(model: Any, x: Array, target: Array, *, num_segments: int = 50,
                     segmentation: str = "slic", segments: Optional[Array] = None,
                     baseline: Any = 0.0, compactness=1.0, slic_iterations: int = 10,
                     batch_size: int = 64, score: str = "logit") -> Explanation:
    """Feature ablation: the score drop when one feature group is replaced by the baseline.

    ``φ_k = S_c(x) − S_c(x with group k set to baseline)``, broadcast to the group's pixels:
    occlusion (Zeiler & Fergus 2014, §4.2) with the sliding window replaced by feature groups
    (superpixels, grid cells or your own ``segments``), as Captum ``FeatureAblation`` with a
    ``feature_mask``. One model call per group (``M + 1`` per image), ``batch_size`` at a time.
    Captum's default (no mask) ablates every input element on its own; ours are LIME's 50
    superpixels (``segments`` with one label per pixel gives Captum's per-pixel ablation across
    channels).

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      num_segments, segmentation, segments, compactness, slic_iterations: the feature groups,
        as :func:`xaijax.methods.lime`.
      baseline: value of the ablated group (scalar or broadcastable to ``x``; Captum default 0).
      batch_size: ablated images per model call (static; Captum's ``perturbations_per_eval``).
      score: ``"logit"`` (Captum), ``"softmax"`` or ``"sigmoid"``.

    Returns:
      heatmap ``(N, H, W)`` (signed); ``extras``: ``values`` ``(N, M)``, ``segments``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.explain(m, jnp.ones((1, 32, 32, 3)), 0, method="feature_ablation",
      ...                 num_segments=4, segmentation="grid")
      >>> ex.extras["values"].shape
      (1, 4)

    References:
      Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
      §4.2; Captum ``FeatureAblation``.
    """
    name = "feature_ablation"
    _validate_groups(name)(model, x, dict(score=score, batch_size=batch_size))
    n = x.shape[0]
    f = logits_fn(model)
    segs, k, onehot = _groups(x, segments, num_segments, segmentation, compactness,
                              slic_iterations)
    base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    z = 1.0 - jnp.eye(k, dtype=x.dtype)

    s0 = class_scores(f(x), target, score)
    phi = s0[:, None] - _coalition_scores(f, x, base, target, onehot,
                                          jnp.broadcast_to(z, (n, k, k)), batch_size, score)
    heat = jnp.take_along_axis(phi, segs.reshape(n, -1), axis=1).reshape(segs.shape)
    return Explanation(heatmap=heat, attribution=None, extras={"values": phi, "segments": segs},
                       target=target, method=name)
