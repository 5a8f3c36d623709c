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

The categorical variant (`latent="categorical"`) has K latents with C categories each, $z_k$ one-hot,
$q(z_k = e_c \mid x) = \mathrm{softmax}(l_k)_c$, a uniform prior and decoder logits $\eta = W\,\mathrm{vec}(z) + c$:
$C^K$ configurations, $\nabla_{l_k} R = \sum_z q(z) \log p(x \mid z)\, (z_k - \mathrm{softmax}(l_k))$ and
$\nabla_{l_k} \mathrm{KL} = p_k \odot (\log(C p_k) - p_k^\top \log(C p_k))$. Its pathwise estimators go through
`dab_keras.layers.ArgMax(axis=-1)` on $a = l + G$ with Gumbel noise G (the Gumbel-max trick: straight-through
is then "straight-through Gumbel", relaxed the Gumbel-Softmax), and one more row, `straight_through_mean`:
the hard sample's decoder gradient through the Jacobian of the noise-free softmax(l), the mean of the
sample given l (the classic straight-through of stochastic units; not a layer estimator, computed here).
"""

import math

import numpy as np

# ----------------------------------------------------------------------------------- the exact model
LATENTS = ("binary", "categorical")


def make_problem(latents=4, observed=16, points=32, weight_scale=1.5, logit_scale=1.5, seed=0,
                 latent="binary", categories=4):
    """A random enumerable VAE (binary or categorical latents) and data drawn from it.

    Returns:
        A dict with `latent`, `W` (D, F), `c` (D,), `x` (N, D) in {0, 1} and encoder `logits`, float64:
        binary: F = K and logits (N, K); categorical: F = K·C and logits (N, K, C).
    """
    if latent not in LATENTS:
        raise ValueError(f"`latent` must be one of {LATENTS}. Received: latent={latent!r}")
    rng = np.random.default_rng(seed)
    features = latents if latent == "binary" else latents * categories
    weights = rng.normal(0.0, weight_scale, (observed, features))
    bias = rng.normal(0.0, 1.0, observed)
    if latent == "binary":
        z = rng.choice([-1.0, 1.0], size=(points, latents))
    else:
        z = np.eye(categories)[rng.integers(0, categories, (points, latents))].reshape(points, -1)
    x = (rng.random((points, observed)) < _sigmoid(z @ weights.T + bias)).astype("float64")
    shape = (points, latents) if latent == "binary" else (points, latents, categories)
    logits = rng.normal(0.0, logit_scale, shape)  # drawn after x: the binary problems of earlier runs
    return {"latent": latent, "W": weights, "c": bias, "x": x, "logits": logits}


def _sigmoid(v):
    return 0.5 * (1.0 + np.tanh(0.5 * v))


def _softmax(v):
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(v):
    m = v.max(axis=-1, keepdims=True)
    return v - m - np.log(np.sum(np.exp(v - m), axis=-1, keepdims=True))


def configurations(latents, categories=None):
    """All latent configurations: binary (2^K, K) in {-1, +1}; with `categories` C, one-hot (C^K, K, C)."""
    if categories is None:
        grid = (np.arange(2**latents)[:, None] >> np.arange(latents)[None, :]) & 1
        return 2.0 * grid - 1.0
    index = (np.arange(categories**latents)[:, None] // categories ** np.arange(latents)[None, :]) % categories
    return np.eye(categories)[index]


def _categorical(problem):
    """Whether `problem` (from `make_problem`) has one-hot categorical latents."""
    return problem["latent"] == "categorical"


def _problem_configurations(problem):
    logits = problem["logits"]
    if _categorical(problem):
        return configurations(logits.shape[-2], logits.shape[-1])
    return configurations(logits.shape[-1])


def log_likelihood(x, z, W, c):
    """log p(x | z) of the Bernoulli decoder; `x` (..., D) and `z` (..., F) broadcast (one-hot z flattened)."""
    eta = z @ W.T + c
    return np.sum(x * eta - np.logaddexp(0.0, eta), axis=-1)


def _log_likelihood(problem, x, z):
    if _categorical(problem):
        z = z.reshape(z.shape[:-2] + (-1,))
    return log_likelihood(x, z, problem["W"], problem["c"])


def log_q(z, logits, latent="binary"):
    """log q(z | x) of the factorised encoder: binary `z` (..., K) in {-1, +1} with `logits` (..., K), or
    categorical one-hot `z` (..., K, C) with `logits` (..., K, C); `z` and `logits` broadcast."""
    if latent == "categorical":
        return np.sum(z * _log_softmax(logits), axis=(-2, -1))
    return np.sum(-np.logaddexp(0.0, -z * logits), axis=-1)


def kl(logits, latent="binary"):
    """KL(q || uniform prior) per data point."""
    if latent == "categorical":
        p = _softmax(logits)
        return np.sum(p * (_log_softmax(logits) + np.log(logits.shape[-1])), axis=(-2, -1))
    p = _sigmoid(logits)
    return np.sum(p * np.log(2 * p + 1e-300) + (1 - p) * np.log(2 * (1 - p) + 1e-300), axis=-1)


def elbo(problem, logits=None):
    """Exact ELBO per data point by summing over all configurations, shape (N,)."""
    logits = problem["logits"] if logits is None else logits
    latent = problem["latent"]
    zs = _problem_configurations(problem)
    weights = np.exp(log_q(zs[None], logits[:, None], latent))  # (N, Cfg)
    recon = _log_likelihood(problem, problem["x"][:, None], zs[None])  # (N, Cfg)
    return np.sum(weights * recon, axis=-1) - kl(logits, latent)


def exact_gradients(problem):
    """Exact gradients w.r.t. the encoder logits: `(grad_R, grad_KL)`, each shaped like the logits;
    ∇ELBO = grad_R - grad_KL."""
    logits, x = problem["logits"], problem["x"]
    latent = problem["latent"]
    zs = _problem_configurations(problem)
    weights = np.exp(log_q(zs[None], logits[:, None], latent))  # (N, Cfg)
    recon = _log_likelihood(problem, x[:, None], zs[None])  # (N, Cfg)
    score = _score(latent, logits[:, None], zs[None])  # (N, Cfg) + the logits' trailing shape
    extra = (None,) * (logits.ndim - 1)
    grad_r = np.sum((weights * recon)[(...,) + extra] * score, axis=1)
    if latent == "categorical":
        p = _softmax(logits)
        log_cp = _log_softmax(logits) + np.log(logits.shape[-1])
        return grad_r, p * (log_cp - np.sum(p * log_cp, axis=-1, keepdims=True))
    p = _sigmoid(logits)
    return grad_r, p * (1 - p) * logits


# ----------------------------------------------------------------------------------- estimators
def _sample(problem, shape, rng):
    """Exact samples of q for every data point: binary (…, N, K) in {-1, +1}; categorical one-hot (…, N, K, C)."""
    logits = problem["logits"]
    if _categorical(problem):
        index = np.argmax(logits + gumbel_noise(shape + logits.shape, rng), axis=-1)
        return np.eye(logits.shape[-1])[index]
    return 2.0 * (rng.random(shape + logits.shape) < _sigmoid(logits)) - 1.0


def _score(latent, logits, z):
    """∇_l log q(z | x): binary (z + 1)/2 − σ(l); categorical z − softmax(l); `z` and `logits` broadcast."""
    if latent == "categorical":
        return z - _softmax(logits)
    return (z + 1.0) / 2.0 - _sigmoid(logits)


def leave_one_out_baseline(f, xp=np):
    """Each sample's baseline: the mean of the other samples' values, along axis 0 (m >= 2 samples).

    Args:
        f: `(m, ...)` values of m samples (NumPy array, or a tensor with `xp=keras.ops`).
        xp: The array module: `numpy` or `keras.ops`. Defaults to `numpy`.

    Returns:
        `(m, ...)`: `(Σ_j f_j − f_i) / (m − 1)`.

    Examples:
        >>> leave_one_out_baseline(np.array([1.0, 2.0, 6.0])).tolist()
        [4.0, 3.5, 1.5]
    """
    m = f.shape[0]
    if m is None or m < 2:
        raise ValueError(f"The leave-one-out baseline needs at least 2 samples along axis 0. Received: shape={f.shape}")
    return (xp.sum(f, axis=0, keepdims=True) - f) / (m - 1)


def reinforce_loo(problem, estimates, samples=4, seed=0):
    """REINFORCE with a leave-one-out baseline: `estimates` estimates of ∇R, shape (estimates,) + logits."""
    if samples < 2:
        raise ValueError(f"The leave-one-out baseline needs `samples` >= 2. Received: samples={samples}")
    rng = np.random.default_rng(seed)
    logits, x = problem["logits"], problem["x"]
    extra = (None,) * (logits.ndim - 1)
    out = np.empty((estimates,) + logits.shape)
    for s in range(estimates):
        z = _sample(problem, (samples,), rng)  # (m, N, K[, C])
        f = _log_likelihood(problem, x[None], z)  # (m, N)
        baseline = leave_one_out_baseline(f)
        out[s] = np.mean((f - baseline)[(...,) + extra] * _score(problem["latent"], logits, z), axis=0)
    return out


def logistic_noise(shape, rng):
    u = rng.uniform(np.finfo("float64").tiny, 1.0, shape)
    return np.log(u) - np.log1p(-u)


def gumbel_noise(shape, rng):
    u = rng.uniform(np.finfo("float64").tiny, 1.0, shape)
    return -np.log(-np.log(u))


def gradient(objective, value):
    """The gradient of the scalar `objective(value)` w.r.t. `value` (a float32 array), float64 NumPy.

    TensorFlow or JAX: `objective` must be a pure function of its argument on JAX (read layer variables
    through `stateless_call`, as `input_gradient` does).
    """
    import keras
    from keras import ops

    value = ops.convert_to_tensor(np.asarray(value, "float32"))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(value)
            result = objective(value)
        grad = tape.gradient(result, value)
    elif backend == "jax":
        import jax

        grad = jax.grad(objective)(value)
    else:
        raise ValueError(f"The diagnostic runs on the tensorflow or jax backend. Received: backend={backend!r}")
    return np.asarray(ops.convert_to_numpy(grad), "float64")


def input_gradient(layer, a, fn, **call_kwargs):
    """Gradient of `fn(layer(a, training=True, **call_kwargs))` (a scalar) w.r.t. `a`, as NumPy.

    TensorFlow or JAX; on JAX the layer runs statelessly (its variables as values), so no tracer leaks into
    its state. An unbuilt layer is built for `a`'s shape first.
    """
    import keras

    a = np.asarray(a, dtype="float32")
    if not layer.built:
        layer.build(a.shape)
    if keras.backend.backend() != "jax":
        return gradient(lambda inputs: fn(layer(inputs, training=True, **call_kwargs)), a)
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def objective(inputs):
        outputs, _ = layer.stateless_call(trainable, non_trainable, inputs, training=True, **call_kwargs)
        return fn(outputs)

    return gradient(objective, a)


def _decoder_fn(problem, estimates):
    import keras

    ops = keras.ops
    x = ops.convert_to_tensor(np.tile(problem["x"], (estimates, 1)).astype("float32"))
    W = ops.convert_to_tensor(problem["W"].T.astype("float32"))
    c = ops.convert_to_tensor(problem["c"].astype("float32"))

    def fn(z):
        eta = ops.matmul(ops.reshape(z, (ops.shape(z)[0], -1)), W) + c
        return ops.sum(x * eta - ops.softplus(eta))

    return fn


def _noisy_logits(problem, rows, rng):
    """a = l[rows] + noise: logistic noise (binary, z = sign(a)) or Gumbel noise (categorical, z = onehot(argmax a))."""
    logits = problem["logits"][rows]
    noise = gumbel_noise if _categorical(problem) else logistic_noise
    return logits + noise(logits.shape, rng)


def pathwise(problem, layer, estimates, seed=0):
    """Estimates of ∇R through a hard layer (`Sign` or `ArgMax(axis=-1)`) on a = l + noise: (estimates,) + logits."""
    rng = np.random.default_rng(seed)
    logits = problem["logits"]
    a = _noisy_logits(problem, np.tile(np.arange(len(logits)), estimates), rng)
    grad = input_gradient(layer, a, _decoder_fn(problem, estimates))
    return grad.reshape((estimates,) + logits.shape)


def straight_through_mean(problem, estimates, seed=0):
    """Estimates of ∇R: the decoder gradient at the hard sample through the Jacobian of E[z | l].

    E[z | l] is 2σ(l) − 1 for binary z ∈ {−1, +1} and softmax(l) for one-hot z: the straight-through of
    stochastic units (Bengio et al., 2013), whose surrogate is the noise-free mean rather than a function of
    the noisy logits. Same samples as `pathwise` with the same seed.
    """
    rng = np.random.default_rng(seed)
    logits, x = problem["logits"], problem["x"]
    a = _noisy_logits(problem, np.tile(np.arange(len(logits)), estimates), rng).reshape(
        (estimates,) + logits.shape)
    categorical = _categorical(problem)
    z = np.eye(logits.shape[-1])[np.argmax(a, axis=-1)] if categorical else np.where(a >= 0, 1.0, -1.0)
    flat = z.reshape(z.shape[:2] + (-1,))
    upstream = ((x - _sigmoid(flat @ problem["W"].T + problem["c"])) @ problem["W"]).reshape(z.shape)
    if categorical:
        p = _softmax(logits)
        return p * (upstream - np.sum(p * upstream, axis=-1, keepdims=True))
    p = _sigmoid(logits)
    return 2.0 * p * (1.0 - p) * upstream


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
    a = _noisy_logits(problem, rows, rng).astype("float32")
    model = keras.Sequential([keras.Input(logits.shape[1:]), layer])
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
        dab_steps=(0, 200, 2000), loo_samples=(2, 8), seed=0, log=print, latent="binary", categories=4):
    """Runs the diagnostic and returns `(rows, problem_summary)`."""
    import keras

    from dab_keras import estimators, layers

    problem = make_problem(latents, observed, points, seed=seed, latent=latent, categories=categories)
    grad_r, grad_kl = exact_gradients(problem)
    info = {"exact_elbo_mean": float(elbo(problem).mean()), "grad_norm": float(np.linalg.norm(grad_r))}
    rows = []

    def hard_layer(estimator):
        if latent == "categorical":
            return layers.ArgMax(axis=-1, estimator=estimator)
        return layers.Sign(estimator=estimator)

    def add(name, estimates, evaluations, **extra):
        row = {"estimator": name, "evaluations": evaluations, **summarize(estimates, grad_r, grad_kl), **extra}
        rows.append(row)
        log(f"{name}: bias {row['bias_norm']:.4g} (floor {row['mc_floor']:.4g}), variance {row['variance']:.4g}, "
            f"cos(mean) {row['cos_mean']:.4f}")

    keras.utils.set_random_seed(seed)
    add("straight_through", pathwise(problem, hard_layer("straight_through"), samples, seed), 1)
    add("straight_through_mean", straight_through_mean(problem, samples, seed), 1)
    for tau in temperatures:
        add(f"relaxed τ={tau:g}", pathwise(problem, hard_layer(estimators.Relaxed(temperature=tau)), samples, seed),
            1)
    # The default (residual: the surrogate plus a correction starting at 0) and the paper's DAB (g alone).
    for label, estimator in (("dab", "dab"), ("dab_paper", estimators.DAB(residual=False))):
        keras.utils.set_random_seed(seed)
        layer = hard_layer(estimator)
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
    parser.add_argument("--latent", choices=LATENTS, default="binary",
                        help="binary latents through Sign, or categorical ones through ArgMax")
    parser.add_argument("--latents", type=int, default=4,
                        help="K latents (2^K binary or C^K categorical configurations)")
    parser.add_argument("--categories", type=int, default=4, help="C categories per latent (categorical)")
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
    from benchmarks.study import results

    for name in ("latents", "observed", "points", "samples"):
        if getattr(args, name) < 1:
            raise SystemExit(f"`--{name}` must be a positive integer. Received: {getattr(args, name)}")
    if args.latent == "categorical":
        if args.categories < 2:
            raise SystemExit(f"`--categories` must be at least 2. Received: {args.categories}")
        count, described = args.categories**args.latents, f"{args.latents}×{args.categories} categorical"
    else:
        count, described = 2**args.latents, f"{args.latents} binary"
    if count > 2**16:
        raise SystemExit(f"The latent configurations are enumerated: at most 65,536 of them. Received: "
                         f"--latents {args.latents} ({described}: {count:,})")
    rows, info = run(args.latents, args.observed, args.points, args.samples, tuple(args.temperatures),
                     tuple(args.dab_steps), tuple(args.loo_samples), args.seed, latent=args.latent,
                     categories=args.categories)
    text = (f"`{command}`\n\nK={described} latents, D={args.observed}, N={args.points} points, "
            f"S={args.samples} estimates per row; exact mean ELBO {info['exact_elbo_mean']:.4f} nats, "
            f"‖∇R‖ = {info['grad_norm']:.4g}.\n\n" + table_markdown(rows))
    results.emit(text, args.output)
    return 0
