r"""Gradient-quality diagnostic: each estimator's gradient against the exact gradient of a small binary VAE.

The model has K binary latents $z \in \{-1, +1\}^K$ with a uniform prior, a fixed Bernoulli decoder with
logits $\eta = W z + c$ over D pixels, and a factorised encoder $q(z_k = +1 \mid x) = \sigma(l_k)$ whose
logits $l$ (one row per data point) are the parameters. With $2^K$ latent configurations the ELBO

$$ \mathcal{L}(l) = \underbrace{\textstyle\sum_z q(z)\, \log p(x \mid z)}_{R(l)} - \mathrm{KL}(q \,\|\, p) $$

and its gradient are exact sums: $\nabla_l R = \sum_z q(z) \log p(x \mid z)\, (b(z) - \sigma(l))$ with
$b = (z + 1)/2$, and $\nabla_l \mathrm{KL} = \sigma'(l)\, l$. The KL term is analytic for every estimator,
so the estimators differ only on $\nabla_l R$, which is what the bias and variance columns measure.

Estimators, each giving one estimate of $\nabla_l R$ for all data points at once:

- pathwise, through `dab_keras.layers.Sign(estimator=...)` applied to $a = l + \epsilon$, $\epsilon \sim$
  Logistic(0, 1) (so $z = \mathrm{sign}(a)$ has exactly the law $q$): straight-through, relaxed at several
  τ (the forward is then $\tanh(a/\tau)$), and DAB (`dab`: the residual default, identity plus a
  correction that starts at 0; `dab_paper`: g alone) after its approximator has been fitted for N steps
  (Adam on the layer's own loss, on fresh samples of $a$);
- REINFORCE with a leave-one-out baseline over m samples (unbiased; m decoder evaluations per estimate).

Reported per estimator over S estimates $G_s$ with mean $\bar G$ and exact gradient $g$: the bias norm
$\|\bar G - g\|$ (and relative to $\|g\|$) beside its Monte-Carlo floor $\sqrt{\mathrm{tr}\,\Sigma / S}$
(what an unbiased estimator shows), the total variance $\mathrm{tr}\,\Sigma$ (per-estimate, ddof 1), the
cosine of $\bar G$ to $g$, and the mean cosine of single estimates to $g$ (for $\nabla_l R$ and for the
whole ELBO gradient, KL included).
"""

import math

import numpy as np


# ----------------------------------------------------------------------------------- the exact model
def make_problem(latents=4, observed=16, points=32, weight_scale=1.5, logit_scale=1.5, seed=0):
    """A random enumerable binary VAE and data drawn from it.

    Returns:
        A dict with `W` (D, K), `c` (D,), `x` (N, D) in {0, 1} and encoder `logits` (N, K), float64.
    """
    rng = np.random.default_rng(seed)
    weights = rng.normal(0.0, weight_scale, (observed, latents))
    bias = rng.normal(0.0, 1.0, observed)
    z = rng.choice([-1.0, 1.0], size=(points, latents))
    x = (rng.random((points, observed)) < _sigmoid(z @ weights.T + bias)).astype("float64")
    logits = rng.normal(0.0, logit_scale, (points, latents))
    return {"W": weights, "c": bias, "x": x, "logits": logits}


def _sigmoid(v):
    return 0.5 * (1.0 + np.tanh(0.5 * v))


def configurations(latents):
    """All 2^K latent vectors in {-1, +1}^K, shape (2^K, K)."""
    grid = (np.arange(2**latents)[:, None] >> np.arange(latents)[None, :]) & 1
    return 2.0 * grid - 1.0


def log_likelihood(x, z, W, c):
    """log p(x | z) of the Bernoulli decoder; `x` (..., D) and `z` (..., K) broadcast."""
    eta = z @ W.T + c
    return np.sum(x * eta - np.logaddexp(0.0, eta), axis=-1)


def log_q(z, logits):
    """log q(z | x) of the factorised encoder; `z` (..., K) in {-1, +1} and `logits` broadcast."""
    return np.sum(-np.logaddexp(0.0, -z * logits), axis=-1)


def kl(logits):
    """KL(q || uniform prior) per data point."""
    p = _sigmoid(logits)
    return np.sum(p * np.log(2 * p + 1e-300) + (1 - p) * np.log(2 * (1 - p) + 1e-300), axis=-1)


def elbo(problem, logits=None):
    """Exact ELBO per data point by summing over all 2^K configurations, shape (N,)."""
    logits = problem["logits"] if logits is None else logits
    zs = configurations(logits.shape[-1])  # (C, K)
    weights = np.exp(log_q(zs[None], logits[:, None]))  # (N, C)
    recon = log_likelihood(problem["x"][:, None], zs[None], problem["W"], problem["c"])  # (N, C)
    return np.sum(weights * recon, axis=-1) - kl(logits)


def exact_gradients(problem):
    """Exact gradients w.r.t. the encoder logits: `(grad_R, grad_KL)`, each (N, K); ∇ELBO = grad_R - grad_KL."""
    logits, x = problem["logits"], problem["x"]
    zs = configurations(logits.shape[-1])
    weights = np.exp(log_q(zs[None], logits[:, None]))  # (N, C)
    recon = log_likelihood(x[:, None], zs[None], problem["W"], problem["c"])  # (N, C)
    score = (zs[None] + 1.0) / 2.0 - _sigmoid(logits)[:, None]  # (N, C, K)
    grad_r = np.sum((weights * recon)[..., None] * score, axis=1)
    p = _sigmoid(logits)
    grad_kl = p * (1 - p) * logits
    return grad_r, grad_kl


# ----------------------------------------------------------------------------------- estimators
def reinforce_loo(problem, estimates, samples=4, seed=0):
    """REINFORCE with a leave-one-out baseline: `estimates` estimates of ∇R, shape (estimates, N, K)."""
    if samples < 2:
        raise ValueError(f"The leave-one-out baseline needs `samples` >= 2. Received: samples={samples}")
    rng = np.random.default_rng(seed)
    logits, x = problem["logits"], problem["x"]
    p = _sigmoid(logits)
    out = np.empty((estimates,) + logits.shape)
    for s in range(estimates):
        b = (rng.random((samples,) + logits.shape) < p).astype("float64")  # (m, N, K)
        f = log_likelihood(x[None], 2 * b - 1, problem["W"], problem["c"])  # (m, N)
        baseline = (f.sum(axis=0, keepdims=True) - f) / (samples - 1)
        out[s] = np.mean((f - baseline)[..., None] * (b - p), axis=0)
    return out


def logistic_noise(shape, rng):
    u = rng.uniform(np.finfo("float64").tiny, 1.0, shape)
    return np.log(u) - np.log1p(-u)


def input_gradient(layer, a, fn):
    """Gradient of `fn(layer(a, training=True))` (a scalar) w.r.t. `a`, as NumPy, on TensorFlow or JAX."""
    import keras

    backend = keras.backend.backend()
    a = keras.ops.convert_to_tensor(np.asarray(a, dtype="float32"))
    if not layer.built:
        layer(a[:1], training=True)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(a)
            value = fn(layer(a, training=True))
        return np.asarray(tape.gradient(value, a), dtype="float64")
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def objective(inputs):
            outputs, _ = layer.stateless_call(trainable, non_trainable, inputs, training=True)
            return fn(outputs)

        return np.asarray(jax.grad(objective)(a), dtype="float64")
    raise ValueError(f"The diagnostic runs on the tensorflow or jax backend. Received: backend={backend!r}")


def _decoder_fn(problem, estimates):
    import keras

    ops = keras.ops
    x = ops.convert_to_tensor(np.tile(problem["x"], (estimates, 1)).astype("float32"))
    W = ops.convert_to_tensor(problem["W"].T.astype("float32"))
    c = ops.convert_to_tensor(problem["c"].astype("float32"))

    def fn(z):
        eta = ops.matmul(z, W) + c
        return ops.sum(x * eta - ops.softplus(eta))

    return fn


def pathwise(problem, layer, estimates, seed=0):
    """Estimates of ∇R through a `Sign`-like layer on a = l + logistic noise: shape (estimates, N, K)."""
    rng = np.random.default_rng(seed)
    logits = problem["logits"]
    a = np.tile(logits, (estimates, 1)) + logistic_noise((estimates * logits.shape[0], logits.shape[1]), rng)
    grad = input_gradient(layer, a, _decoder_fn(problem, estimates))
    return grad.reshape((estimates,) + logits.shape)


def fit_dab(layer, problem, steps, batch_size=256, learning_rate=1e-3, seed=0):
    """Fits a DAB layer's approximator for `steps` Adam steps on fresh samples of a = l + noise.

    Returns:
        The layer's loss (γ · approximation error) over the last epoch, or `None` for 0 steps.
    """
    import keras

    if steps <= 0:
        return None
    rng = np.random.default_rng(seed + 1)
    logits = problem["logits"]
    rows = rng.integers(0, logits.shape[0], steps * batch_size)
    a = (logits[rows] + logistic_noise((steps * batch_size, logits.shape[1]), rng)).astype("float32")
    model = keras.Sequential([keras.Input((logits.shape[1],)), layer])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    history = model.fit(a, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return float(history.history["loss"][-1])


# ----------------------------------------------------------------------------------- summary
def summarize(estimates, grad_r, grad_kl):
    """Bias, variance and cosines of estimates (S, N, K) of ∇R against the exact `grad_r`."""
    flat = estimates.reshape(len(estimates), -1)
    exact = grad_r.reshape(-1)
    elbo_exact = (grad_r - grad_kl).reshape(-1)
    mean = flat.mean(axis=0)
    variance = float(np.sum(flat.var(axis=0, ddof=1))) if len(flat) > 1 else float("nan")
    bias = float(np.linalg.norm(mean - exact))

    def cosine(u, v):
        return np.sum(u * v, axis=-1) / (
            np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-300)

    return {
        "bias_norm": bias,
        "relative_bias": bias / float(np.linalg.norm(exact)),
        "mc_floor": math.sqrt(variance / len(flat)),
        "variance": variance,
        "cos_mean": float(cosine(mean, exact)),
        "cos_single": float(np.mean(cosine(flat, exact[None]))),
        "cos_single_elbo": float(np.mean(cosine(flat - grad_kl.reshape(1, -1), elbo_exact[None]))),
    }


COLUMNS = (
    ("estimator", "estimator"),
    ("evaluations", "decoder evals / estimate"),
    ("bias_norm", "‖bias‖"),
    ("relative_bias", "‖bias‖ / ‖∇R‖"),
    ("mc_floor", "MC floor √(tr Σ / S)"),
    ("variance", "variance tr Σ"),
    ("cos_mean", "cos(mean, ∇R)"),
    ("cos_single", "mean cos(single, ∇R)"),
    ("cos_single_elbo", "mean cos(single, ∇ELBO)"),
)


def table_markdown(rows):
    """A Markdown table of `summarize` rows (each with `estimator` and `evaluations` added)."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            value = row[key]
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(latents=4, observed=16, points=32, samples=2000, temperatures=(0.1, 0.5, 1.0, 2.0),
        dab_steps=(0, 200, 2000), loo_samples=(2, 8), seed=0, log=print):
    """Runs the diagnostic and returns `(rows, problem_summary)`."""
    import keras

    from dab_keras import estimators, layers

    problem = make_problem(latents, observed, points, seed=seed)
    grad_r, grad_kl = exact_gradients(problem)
    info = {"exact_elbo_mean": float(elbo(problem).mean()), "grad_norm": float(np.linalg.norm(grad_r))}
    rows = []

    def add(name, estimates, evaluations, **extra):
        row = {"estimator": name, "evaluations": evaluations, **summarize(estimates, grad_r, grad_kl), **extra}
        rows.append(row)
        log(f"{name}: bias {row['bias_norm']:.4g} (floor {row['mc_floor']:.4g}), variance {row['variance']:.4g}, "
            f"cos(mean) {row['cos_mean']:.4f}")

    keras.utils.set_random_seed(seed)
    add("straight_through", pathwise(problem, layers.Sign(estimator="straight_through"), samples, seed), 1)
    for tau in temperatures:
        layer = layers.Sign(estimator=estimators.Relaxed(temperature=tau))
        add(f"relaxed τ={tau:g}", pathwise(problem, layer, samples, seed), 1)
    # The default (residual: identity + a correction starting at 0) and the paper's DAB (g alone).
    for label, estimator in (("dab", "dab"), ("dab_paper", estimators.DAB(residual=False))):
        keras.utils.set_random_seed(seed)
        layer = layers.Sign(estimator=estimator)
        fitted = 0
        for steps in sorted(dab_steps):
            loss = fit_dab(layer, problem, steps - fitted, seed=seed + steps)
            fitted = steps
            add(f"{label}, fitted {steps} steps", pathwise(problem, layer, samples, seed), 1,
                approximator_loss=loss)
    for m in loo_samples:
        add(f"REINFORCE LOO m={m}", reinforce_loo(problem, samples, m, seed), m)
    return rows, info


def add_arguments(parser):
    parser.add_argument("--latents", type=int, default=4, help="K binary latents (2^K configurations)")
    parser.add_argument("--observed", type=int, default=16, help="D binary pixels")
    parser.add_argument("--points", type=int, default=32, help="N data points")
    parser.add_argument("--samples", type=int, default=2000, help="S estimates per estimator")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.1, 0.5, 1.0, 2.0])
    parser.add_argument("--dab-steps", type=int, nargs="+", default=[0, 200, 2000],
                        help="approximator fitting steps (Adam 1e-3, batch 256), cumulative")
    parser.add_argument("--loo-samples", type=int, nargs="+", default=[2, 8],
                        help="samples m of REINFORCE with a leave-one-out baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the Markdown table to this file")


def main(args, command):
    for name in ("latents", "observed", "points", "samples"):
        if getattr(args, name) < 1:
            raise SystemExit(f"`--{name}` must be a positive integer. Received: {getattr(args, name)}")
    if args.latents > 16:
        raise SystemExit(f"`--latents` must be at most 16 (2^K configurations are enumerated). "
                         f"Received: {args.latents}")
    rows, info = run(args.latents, args.observed, args.points, args.samples, tuple(args.temperatures),
                     tuple(args.dab_steps), tuple(args.loo_samples), args.seed)
    text = (f"`{command}`\n\nK={args.latents} binary latents, D={args.observed}, N={args.points} points, "
            f"S={args.samples} estimates per row; exact mean ELBO {info['exact_elbo_mean']:.4f} nats, "
            f"‖∇R‖ = {info['grad_norm']:.4g}.\n\n" + table_markdown(rows))
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    return 0
