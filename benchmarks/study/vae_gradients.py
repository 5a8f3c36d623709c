r"""The encoder gradient of a trained zoo VAE: each estimator's bias and variance at the model's own state.

`gradients` measures estimators on a small VAE whose latent space can be enumerated, at random
parameters. This diagnostic measures them where training actually happens: at the saved states (final
weights or per-epoch checkpoints) of the zoo's categorical VAE (G = 30 groups of K = 10 categories, an
MLP decoder), on binarized test images.

For images $x_b$ with posterior logits $\ell_b$ (G, K) and probabilities $\pi = \mathrm{softmax}(\ell)$,
the reconstruction term $R = \sum_b \mathbb{E}_{q(z \mid x_b)} \log p(x_b \mid z)$ has the gradient

$$ \nabla_{\ell_{bg}} R = \mathbb{E}_{z_{-g}} \Big[ \pi_{bg} \odot \big( f_{bg} - \pi_{bg}^\top f_{bg} \big) \Big],
   \qquad f_{bgc} = \log p\big(x_b \mid z_{-g},\ z_g = e_c\big), $$

exact in the group's own category (all K values of $z_g$ decoded) and sampled only over the other
groups: the reference, unbiased, with $S_{\mathrm{ref}}$ samples and G·K decoder evaluations each. (The
KL term is analytic and identical for every estimator, so it is left out, as in `gradients`.)

Each estimator gives single-sample estimates $G_s$ of the same gradient, the decoder's log-likelihood
differentiated through a `dab_keras.layers.ArgMax` sampling layer called with Gumbel noise (`noise=`):
straight-through Gumbel (the relaxation's gradient at τ), the Gumbel-Softmax (relaxed forward at τ:
the objective's gradient at soft codes, as that estimator trains), ReinMax, and the state's own
sampling layer where it is a DAB (its trained correction). Reported per estimator, each relative to the
norm of the reference mean, for the logit gradient $(B, G, K)$ and for what it contributes to the
posterior layer's kernel, $\sum_b h_b \otimes G_b$ (`kernel`: what the optimizer receives from a batch
of B images; B = 100 is the recipe's batch):

- `bias`: $\lVert \bar G - \nabla R \rVert$ with both Monte-Carlo errors removed, $\sqrt{\max(0,\,
  \lVert \bar G - \bar G_{\mathrm{ref}} \rVert^2 - \mathrm{tr}\,\Sigma_G / S - \mathrm{tr}\,\Sigma_{\mathrm{ref}} /
  S_{\mathrm{ref}})}$, beside the `floor` $\sqrt{\mathrm{tr}\,\Sigma_G / S + \mathrm{tr}\,\Sigma_{\mathrm{ref}} /
  S_{\mathrm{ref}}}$ below which a bias is not resolved;
- `sd`: the single estimate's standard deviation, $\sqrt{\mathrm{tr}\,\Sigma_G}$;
- `rmse`: $\sqrt{\mathrm{bias}^2 + \mathrm{tr}\,\Sigma_G}$, the single estimate's error, what one step sees;
- `cos(mean)`: the cosine of $\bar G$ to the reference mean; `mean cos(single)`: of single estimates.

- `along ∇H`: the mean estimate's component along the gradient of the posterior's entropy
  $H = -\sum_{b,g} \pi_{bg}^\top \log \pi_{bg}$ w.r.t. the logits (`entropy_gradient`),
  $\langle \bar G, \nabla_\ell H \rangle / (\lVert \nabla R \rVert\, \lVert \nabla_\ell H \rVert)$, ± its 95 %
  interval over the S estimates; beside the reference's own value (the state's line). Below the
  reference's, a step along the estimator sharpens the posterior more than the exact gradient does.

Each state's line also gives the posterior's mean entropy per group (nats; log 10 = 2.30 is uniform), the
test −ELBO of the zoo's evaluation (`vae_evaluation.mean_bound` on the 10,000 dynamically binarized test
images: a shipped state reproduces its manifest's `neg_elbo`) and the decoder's first-order error
(`first_order_error`): how badly its gradient at a hard code predicts the effect of switching one
group's category, the finite difference the exact gradient is made of.

    python -m benchmarks.study vae-gradients --data mnist.npz \
        --state "relaxed, epoch 60=relaxed:discrete_vae-relaxed.weights.h5@0.3" \
        --state "DAB on ReinMax, epoch 60=dab_residual_reinmax:discrete_vae-dab_residual_reinmax.weights.h5"

With `--bounds-only` the command measures no gradients: per state, the test −ELBO split into its
reconstruction term and the analytic KL, and the posterior's entropy, each a mean over the 10,000 test
images (`bound_terms`).

A state is `LABEL=KIND:WEIGHTS[@TAU]`: KIND names the model that saved the weights (`STATE_KINDS`), τ
(default 1) the temperature of the relaxation rows (the recipe's at that step). Runs on the TensorFlow
or JAX backend.
"""

import math

import numpy as np

from benchmarks.study import gradient_quality as gq

#: The zoo models whose weights a state can hold, and the `DiscreteVAE` arguments that rebuild each.
STATE_KINDS = {
    "relaxed": {"estimator": "relaxed"},
    "straight_through": {"estimator": "straight_through"},
    "straight_through_reinmax": {"estimator": "straight_through", "sample_gradient": "reinmax"},
    "dab": {"estimator": "dab", "dab_residual": False},
    "dab_residual": {"estimator": "dab", "dab_residual": True},
    "dab_residual_reinmax": {"estimator": "dab", "dab_residual": True, "sample_gradient": "reinmax"},
    # a study estimator as the residual DAB, trained by `vae-recipe`
    "dab_mean": {"estimator": "dab", "dab_residual": True, "study_estimator": "dab_mean"},
}


# ----------------------------------------------------------------------------------- the reference
def group_substitutions(z):
    """Every code that differs from `z` in at most one group: `z` with group g set to category c.

    Args:
        z: One-hot codes, `(B, G, K)`.

    Returns:
        `(B, G, K, G, K)`: entry `[b, g, c]` is `z[b]` with its group g replaced by `e_c`.

    Examples:
        >>> z = np.eye(2)[[[0, 1]]]  # one code, G = 2 groups of K = 2: categories (0, 1)
        >>> group_substitutions(z)[0, 0, 1].argmax(-1).tolist()  # group 0 set to category 1
        [1, 1]
    """
    batch, groups, categories = z.shape
    out = np.broadcast_to(z[:, None, None], (batch, groups, categories, groups, categories)).copy()
    eye = np.eye(categories, dtype=z.dtype)
    for g in range(groups):
        out[:, g, :, g, :] = eye
    return out


def rao_blackwell_estimate(probs, values):
    r"""One estimate of $\nabla_\ell\, \mathbb{E}_q f$ per group, exact in the group's own category.

    Args:
        probs: π = softmax(ℓ), `(..., G, K)`.
        values: f at the group substitutions of one sample (`group_substitutions`), `(..., G, K)`.

    Returns:
        $\pi \odot (f - \pi^\top f)$ per group, `(..., G, K)`.

    Examples:
        >>> p = np.array([[0.25, 0.75]])  # one group of two categories
        >>> rao_blackwell_estimate(p, np.array([[1.0, 0.0]])).tolist()  # d/dℓ of π₀ = π₀ π₁ (1, −1)
        [[0.1875, -0.1875]]
    """
    return probs * (values - np.sum(probs * values, axis=-1, keepdims=True))


def _log_likelihood(model, x, z):
    """log p(x | z) per row, a tensor: `x` (n, 784) binary pixels, `z` (n, G, K) codes."""
    from dab_keras.zoo import vae_math

    return -vae_math.bernoulli_neg_log_likelihood(x, model.decode(z))


def _log_likelihood_fn(model, images, chunk=20_000):
    """`ll(z)`: log p(x_b | z) for codes `z` (n·B, G, K) whose rows cycle through the B images, as NumPy."""
    from keras import ops

    flat = images.reshape(len(images), -1).astype("float32")

    def ll(z):
        out = []
        for start in range(0, len(z), chunk):
            part = z[start : start + chunk]
            x = flat[np.arange(start, start + len(part)) % len(flat)]
            out.append(ops.convert_to_numpy(_log_likelihood(model, x, ops.convert_to_tensor(part.astype("float32")))))
        return np.concatenate(out).astype("float64")

    return ll


def decoder_gradient(model, images, z):
    """∇_z log p(x_b | z_b) at codes `z` (B, G, K), as NumPy: what a hard-forward estimator sends back."""
    from keras import ops

    x = images.reshape(len(images), -1).astype("float32")
    return gq.gradient(lambda codes: ops.sum(_log_likelihood(model, x, codes)), z)


def first_order_error(probs, z, values, gradient):
    r"""How well the decoder's gradient at a code predicts the effect of switching one group's category.

    For each group g and category c, the change $\Delta f_{gc} = f(z_{-g}, e_c) - f(z)$ against its
    first-order prediction $\Delta\hat f_{gc} = u_{gc} - u_g^\top z_g$ ($u = \nabla_z f(z)$): the
    straight-through family's gradients are built from $u$, the exact gradient from $\Delta f$.

    Args:
        probs: π, `(B, G, K)` (the weights of the categories, as in the exact gradient).
        z: The one-hot codes, `(B, G, K)`.
        values: f at the group substitutions of `z`, `(B, G, K)`.
        gradient: u, `(B, G, K)`.

    Returns:
        `(squared error, squared change)`: $\sum \pi_{gc} (\Delta f_{gc} - \Delta\hat f_{gc})^2$ and
        $\sum \pi_{gc} \Delta f_{gc}^2$ over the batch.

    Examples:
        >>> p, z = np.full((1, 1, 2), 0.5), np.array([[[1.0, 0.0]]])
        >>> first_order_error(p, z, np.array([[[0.0, 2.0]]]), np.array([[[0.0, 2.0]]]))  # f linear
        (0.0, 2.0)
    """
    change = values - np.sum(values * z, axis=-1, keepdims=True)
    predicted = gradient - np.sum(gradient * z, axis=-1, keepdims=True)
    return float(np.sum(probs * (change - predicted) ** 2)), float(np.sum(probs * change**2))


def reference_gradient(model, images, logits, samples, rng, linearity_samples=10):
    r"""The Rao-Blackwellized estimates of ∇_ℓ R and the decoder's first-order error.

    Returns:
        `(estimates, error)`: `samples` estimates `(samples, B, G, K)`, and the decoder's relative
        first-order error $\sqrt{\sum \pi (\Delta f - \Delta\hat f)^2 / \sum \pi \Delta f^2}$ over
        the first `linearity_samples` samples (`first_order_error`).
    """
    batch, groups, categories = logits.shape
    probs = gq._softmax(logits)
    ll = _log_likelihood_fn(model, np.repeat(images, groups * categories, axis=0))
    out = np.empty((samples,) + logits.shape)
    error = change = 0.0
    for s in range(samples):
        z = np.eye(categories)[np.argmax(logits + gq.gumbel_noise(logits.shape, rng), axis=-1)]
        variants = group_substitutions(z).reshape(-1, groups, categories)
        values = ll(variants).reshape(batch, groups, categories)
        out[s] = rao_blackwell_estimate(probs, values)
        if s < linearity_samples:
            e, c = first_order_error(probs, z, values, decoder_gradient(model, images, z))
            error, change = error + e, change + c
    return out, math.sqrt(error / change)


# ----------------------------------------------------------------------------------- the estimators
def pathwise_estimates(model, layer, images, logits, samples, rng):
    """Single-sample estimates of ∇_ℓ R through a sampling `layer` (called with Gumbel noise), `(S, B, G, K)`."""
    from keras import ops

    tiled = np.tile(logits, (samples, 1, 1)).astype("float32")
    noise = gq.gumbel_noise(tiled.shape, rng).astype("float32")
    x = np.tile(images.reshape(len(images), -1), (samples, 1)).astype("float32")
    grad = gq.input_gradient(layer, tiled, lambda z: ops.sum(_log_likelihood(model, x, z)), noise=noise)
    return grad.reshape((samples,) + logits.shape)


def estimator_layers(model, temperature):
    """The sampling layers measured at a state: `{label: ArgMax layer}` (the state's own DAB layer too)."""
    from dab_keras import estimators, layers

    out = {
        f"straight-through Gumbel, τ={temperature:g}": layers.ArgMax(
            axis=-1, estimator=estimators.StraightThrough(surrogate="relaxation", temperature=temperature)),
        f"Gumbel-Softmax (relaxed), τ={temperature:g}": layers.ArgMax(
            axis=-1, estimator=estimators.Relaxed(temperature=temperature)),
        "ReinMax": layers.ArgMax(axis=-1, estimator=estimators.StraightThrough(surrogate="reinmax")),
    }
    own = model.sampler.estimator
    if isinstance(own, estimators.DAB):
        out[f"the state's own DAB ({own.surrogate} base, trained correction)"] = model.sampler
    return out


def posterior_entropy(probs):
    """The entropy −Σ_k π_k log π_k of each group's categorical, in nats, shaped like `probs` without its last axis."""
    return -np.sum(probs * np.log(np.maximum(probs, 1e-300)), axis=-1)


def entropy_gradient(probs):
    r"""$\nabla_\ell H$ of the posterior's entropy $H = -\sum_k \pi_k \log \pi_k$ per group, $\pi = \mathrm{softmax}(\ell)$.

    $\partial H / \partial \ell_k = -\pi_k (\log \pi_k + H)$.

    Args:
        probs: Category probabilities, `(..., K)`.

    Returns:
        The gradient, shaped like `probs`.

    Examples:
        >>> import numpy as np
        >>> bool(np.allclose(entropy_gradient(np.full((1, 4), 0.25)), 0.0))  # uniform: the entropy's maximum
        True
        >>> entropy_gradient(np.array([[0.5, 0.25, 0.25]])).round(4).tolist()  # toward the less likely ones
        [[-0.1733, 0.0866, 0.0866]]
    """
    return -probs * (np.log(np.maximum(probs, 1e-300)) + posterior_entropy(probs)[..., None])


def entropy_slope(estimates, entropy_grad, scale):
    """`(mean, half-width)`: the estimates' mean component along `entropy_grad`, per `scale` (a norm), ± 95 %.

    Args:
        estimates: Gradient estimates, `(S, ...)`.
        entropy_grad: `entropy_gradient` of the posterior, shaped like one estimate.
        scale: The reference gradient's norm.

    Returns:
        A pair of floats: the mean of ⟨G_s, ∇H⟩ / (scale · ‖∇H‖) and 1.96 times its standard error.
    """
    flat = estimates.reshape(len(estimates), -1)
    direction = entropy_grad.reshape(-1)
    values = flat @ direction / (scale * np.linalg.norm(direction) + 1e-300)
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), half


def summarize(estimates, reference):
    """Bias, spread and cosines of `estimates` (S, ...) against the `reference` estimates (S_ref, ...)."""
    flat = estimates.reshape(len(estimates), -1)
    ref = reference.reshape(len(reference), -1)
    ref_mean, mean = ref.mean(axis=0), flat.mean(axis=0)
    norm = float(np.linalg.norm(ref_mean))
    var = float(np.sum(flat.var(axis=0, ddof=1)))
    ref_var = float(np.sum(ref.var(axis=0, ddof=1)))
    floor2 = var / len(flat) + ref_var / len(ref)
    bias2 = max(0.0, float(np.sum((mean - ref_mean) ** 2)) - floor2)

    def cosine(u, v):
        return np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-300)

    return {
        "bias": math.sqrt(bias2) / norm,
        "floor": math.sqrt(floor2) / norm,
        "sd": math.sqrt(var) / norm,
        "rmse": math.sqrt(bias2 + var) / norm,
        "cos_mean": float(cosine(mean, ref_mean)),
        "cos_single": float(np.mean(cosine(flat, ref_mean[None]))),
    }


# ----------------------------------------------------------------------------------- a state
def load_state(kind, weights):
    """The zoo's categorical VAE of `kind` (`STATE_KINDS`) with `weights` (a `.weights.h5` file) loaded."""
    from dab_keras import zoo

    if kind not in STATE_KINDS:
        raise ValueError(f"A state's KIND must be one of {sorted(STATE_KINDS)}. Received: {kind!r}")
    config = dict(STATE_KINDS[kind])
    candidate = config.pop("study_estimator", None)
    if candidate is None:
        model = zoo.DiscreteVAE(latent="categorical", weights=None, **config)
    else:
        from benchmarks.study import vae_recipe

        model = vae_recipe.candidate_task(candidate).build(config.pop("estimator"), **config)
    model.load_weights(weights)
    return model


def encoder_features(model, images):
    """The input of the posterior layer (the last encoder layer's output) for `images`, `(B, H)` NumPy."""
    from keras import ops

    h = model.flatten(ops.convert_to_tensor(np.asarray(images, "float32")))
    for layer in model.encoder_layers:
        h = layer(h)
    return np.asarray(ops.convert_to_numpy(h), "float64")


def kernel_gradients(features, estimates):
    r"""The posterior layer's kernel gradients $\sum_b h_b \otimes G_b$ of logit-gradient estimates.

    Args:
        features: The posterior layer's inputs $h_b$, `(B, H)`.
        estimates: Gradient estimates w.r.t. the logits, `(S, B, G, K)`.

    Returns:
        `(S, H, G·K)`: what each estimate contributes to the kernel's gradient, summed over the images.
    """
    flat = estimates.reshape(estimates.shape[0], estimates.shape[1], -1)
    return np.einsum("bi,sbj->sij", features, flat, optimize=True)


def measure_state(model, images, temperature=1.0, samples=400, reference_samples=400, seed=0, log=print):
    """The rows of one state: `(rows, info)`, `info` with the reference's norm, the posterior's entropy and
    the decoder's first-order error.

    Each row has the `summarize` statistics of the logit gradients and, prefixed `kernel_`, of the
    posterior layer's kernel gradients (`kernel_gradients`), what the optimizer receives from the batch.
    """
    from keras import ops

    rng = np.random.default_rng(seed)
    logits = np.asarray(ops.convert_to_numpy(model.posterior_logits(images)), "float64")
    features = encoder_features(model, images)
    probs = gq._softmax(logits)
    reference, linearity = reference_gradient(model, images, logits, reference_samples, rng)
    reference_kernel = kernel_gradients(features, reference)
    grad_norm = float(np.linalg.norm(reference.mean(axis=0)))
    entropy_grad = entropy_gradient(probs)
    info = {
        "grad_norm": grad_norm,
        "entropy": float(np.mean(posterior_entropy(probs))),
        "entropy_slope": entropy_slope(reference, entropy_grad, grad_norm)[0],
        "first_order_error": linearity,
    }
    rows = []
    for label, layer in estimator_layers(model, temperature).items():
        estimates = pathwise_estimates(model, layer, images, logits, samples, rng)
        kernel = {f"kernel_{k}": v for k, v in summarize(kernel_gradients(features, estimates),
                                                          reference_kernel).items()}
        slope, slope_half = entropy_slope(estimates, entropy_grad, grad_norm)
        row = {"estimator": label, **summarize(estimates, reference), **kernel,
               "entropy_slope": slope, "entropy_slope_half": slope_half}
        rows.append(row)
        log(f"  {label}: logits bias {row['bias']:.3f} (floor {row['floor']:.3f}), sd {row['sd']:.3f}; "
            f"kernel bias {row['kernel_bias']:.3f} (floor {row['kernel_floor']:.3f}), sd {row['kernel_sd']:.3f}, "
            f"cos(single) {row['kernel_cos_single']:.3f}")
    return rows, info


COLUMNS = (("bias", "logits: bias"), ("floor", "floor"), ("sd", "sd"), ("cos_mean", "cos(mean)"),
           ("kernel_bias", "kernel: bias"), ("kernel_floor", "floor"), ("kernel_sd", "sd"),
           ("kernel_rmse", "rmse"), ("kernel_cos_single", "mean cos(single)"))


def table_markdown(states):
    """One Markdown table of `states`: `[(label, rows, info)]`, a row per state × estimator."""
    lines = ["| state | entropy / group | −ELBO | decoder's first-order error | reference along ∇H | estimator | "
             + " | ".join(t for _, t in COLUMNS) + " | along ∇H |", "|" + "---|" * (7 + len(COLUMNS))]
    for label, rows, info in states:
        for i, row in enumerate(rows):
            head = (f"| {label} | {info['entropy']:.3f} | {info['neg_elbo']:.1f} | {info['first_order_error']:.3f} | "
                    f"{info['entropy_slope']:+.3f} |" if i == 0 else "| | | | | |")
            lines.append(head + f" {row['estimator']} | " + " | ".join(f"{row[k]:.3f}" for k, _ in COLUMNS)
                         + f" | {row['entropy_slope']:+.3f} ± {row['entropy_slope_half']:.3f} |")
    return "\n".join(lines) + "\n"


def bound_terms(model, images):
    """The test −ELBO of `model` on `images` and its two terms, with the posterior's entropy per group.

    The −ELBO is the zoo's evaluation (`vae_evaluation.mean_bound(model.neg_elbo, images)`, a manifest's
    `neg_elbo` on the dynamically binarized test set); the KL is analytic, so the reconstruction term is
    their difference. The KL to the uniform prior is G (log K − H), which gives the mean entropy H.

    Args:
        model: A categorical `DiscreteVAEModel`.
        images: Binary images, `(N, 28, 28, 1)`.

    Returns:
        A dict of floats: `neg_elbo`, `reconstruction` (−log p(x|z)), `kl` and `entropy` (nats per group),
        means over the images.
    """
    from keras import ops

    from dab_keras.zoo import vae_evaluation

    kl = []
    for start in range(0, len(images), vae_evaluation.EVAL_BATCH):
        logits = model.posterior_logits(np.asarray(images[start:start + vae_evaluation.EVAL_BATCH], "float32"))
        kl.append(np.asarray(ops.convert_to_numpy(model.kl(logits)), "float64"))
    neg_elbo = vae_evaluation.mean_bound(model.neg_elbo, images)
    kl = float(np.concatenate(kl).mean())
    return {"neg_elbo": neg_elbo, "reconstruction": neg_elbo - kl, "kl": kl,
            "entropy": math.log(model.categories) - kl / model.groups}


def bounds_markdown(states):
    """One Markdown table of `states`: `[(label, bound_terms dict)]`."""
    lines = ["| state | −ELBO | reconstruction | KL | entropy / group |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {t['neg_elbo']:.2f} | {t['reconstruction']:.2f} | {t['kl']:.2f} | {t['entropy']:.3f} |"
              for label, t in states]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- command line
def parse_state(spec):
    """`"LABEL=KIND:WEIGHTS[@TAU]"` → `(label, kind, weights, tau)`, with clear errors."""
    label, sep, rest = spec.partition("=")
    kind, sep2, weights = rest.partition(":")
    if not sep or not sep2 or not label or not weights:
        raise ValueError(f"`--state` must be LABEL=KIND:WEIGHTS[@TAU]. Received: --state {spec}")
    if kind not in STATE_KINDS:
        raise ValueError(f"`--state` KIND must be one of {sorted(STATE_KINDS)}. Received: --state {spec}")
    tau = 1.0
    if "@" in weights:
        weights, _, text = weights.rpartition("@")
        try:
            tau = float(text)
        except ValueError:
            raise ValueError(f"`--state` TAU must be a number > 0. Received: --state {spec}") from None
        if not tau > 0 or not math.isfinite(tau):
            raise ValueError(f"`--state` TAU must be a number > 0. Received: --state {spec}")
    return label, kind, weights, tau


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="MNIST .npz in Keras's layout (its test split is used)")
    parser.add_argument("--state", action="append", required=True, metavar="LABEL=KIND:WEIGHTS[@TAU]",
                        help=f"a saved VAE state; KIND one of {', '.join(STATE_KINDS)}; τ of the relaxation "
                             "rows (default 1)")
    parser.add_argument("--images", type=int, default=16, help="test images (the first ones)")
    parser.add_argument("--samples", type=int, default=400, help="S estimates per estimator")
    parser.add_argument("--reference-samples", type=int, default=400,
                        help="samples of the reference (G·K decoder evaluations each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the Markdown table to this file")
    parser.add_argument("--bounds-only", action="store_true",
                        help="no gradients: each state's test −ELBO split into reconstruction and KL, and the "
                             "posterior's entropy, over the whole test set")


def main(args, command):
    from benchmarks.study import results
    from dab_keras.zoo import binarized_mnist, vae_evaluation

    for name in ("images", "samples", "reference_samples"):
        if getattr(args, name) < 2:
            raise SystemExit(f"`--{name.replace('_', '-')}` must be an integer >= 2. Received: {getattr(args, name)}")
    try:
        specs = [parse_state(spec) for spec in args.state]
    except ValueError as error:
        raise SystemExit(str(error)) from None
    dynamic = binarized_mnist.binarized_test_sets(args.data)["dynamic"]
    if args.bounds_only:
        states = [(label, bound_terms(load_state(kind, weights), dynamic)) for label, kind, weights, _ in specs]
        text = (f"`{command}`\n\n{len(dynamic):,} test images (dynamically binarized, the zoo's evaluation); "
                "KL analytic, reconstruction = −ELBO − KL.\n\n" + bounds_markdown(states))
        results.emit(text, args.output)
        return 0
    images = np.asarray(dynamic[: args.images], "float32")
    states = []
    for label, kind, weights, tau in specs:
        print(f"{label} ({kind}, τ={tau:g})")
        model = load_state(kind, weights)
        rows, info = measure_state(model, images, tau, args.samples, args.reference_samples, args.seed)
        info["neg_elbo"] = vae_evaluation.mean_bound(model.neg_elbo, dynamic)  # the manifests' `neg_elbo`
        states.append((label, rows, info))
    text = (f"`{command}`\n\n{args.images} test images (dynamically binarized), S = {args.samples} estimates "
            f"per row, S_ref = {args.reference_samples} reference samples; bias, floor, sd and rmse relative "
            f"to the reference gradient's norm.\n\n" + table_markdown(states))
    results.emit(text, args.output)
    return 0
