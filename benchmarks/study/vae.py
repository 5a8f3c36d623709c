r"""The study's discrete-VAE tasks: representation learning and density estimation on binarized MNIST.

Two tasks, the zoo's discrete VAE (`dab_keras.zoo.vae_model.DiscreteVAEModel`, MLP 784 → 512 → 256 →
latent → 256 → 512 → 784) trained from scratch with each estimator of its hard latent sample:

- `vae_categorical`: 30 groups of 10 categories, the sample `ArgMax(ℓ + Gumbel)`;
- `vae_binary`: 200 bits on {−1, +1}, the sample `Sign(ℓ + logistic)`.

Training: batch 100 of the training images binarized afresh per batch (a Bernoulli sample of the
intensities from the run's own generator), Adam 3e-3 without decay, the mean single-sample negative ELBO
(KL analytic). τ of `relaxed` and `straight_through` follows the zoo's exponential annealing 1 → 0.3 over
the first `ANNEAL_STEPS` optimizer steps and stays at 0.3 after: a function of the step alone, so the
result at s steps of a longer run is that of an s-step run. The model runs `STEPS_PER_EXECUTION` (25)
steps per compiled call, so τ is set every 25 steps (from the step at the start of the call).

Estimators: the zoo's `relaxed`, `straight_through`, `dab` (the library's residual DAB,
`dab_residual=True`), `dab_paper` (the approximator alone, as in the paper) and `reinforce`:
REINFORCE with the leave-one-out baseline over m = `REINFORCE_SAMPLES` hard samples per image
(`ReinforceVAE`, m decoder passes per step),

$$ \hat\nabla_\phi = \frac1m \sum_{i=1}^m \Big(f_i - \frac{1}{m-1} \sum_{j \ne i} f_j\Big)
   \nabla_\phi \log q_\phi(z_i \mid x), \qquad f_i = -\log p_\theta(x \mid z_i), $$

for the encoder, the decoder's ordinary gradient of the mean of the f_i, and the KL term analytic.
One more row, `straight_through_mean` (`MeanStraightThroughVAE`): the hard sample with the gradient of
its mean given the noise-free logits, $z + \mu(\ell) - \operatorname{sg}(\mu(\ell))$ with
$\mu = \operatorname{softmax}(\ell)$ (categorical) or $\mathbb{E}[\operatorname{sign}(\ell + L)] =
\tanh(\ell / 2)$ (binary): the classic straight-through of stochastic units, and the limit of a DAB whose
approximator regresses the sample on the noise-free logits (the least-squares fit of a random target is
its conditional mean). No τ.

`relax` (`RelaxVAE`, TensorFlow only): RELAX (Grathwohl et al., 2018), the score-function estimator with a
learned control variate evaluated on a relaxed sample. With z = log π + G (Gumbel; logistic for bits),
b = H(z) the hard sample, z̃ ~ p(z | b) the conditional relaxed sample,

$$ \hat g_\ell = \big(f(b) - c_\phi(\tilde z)\big)\, \nabla_\ell \log q(b \mid \ell)
   + \nabla_\ell c_\phi(z) - \nabla_\ell c_\phi(\tilde z), $$

unbiased for any c_φ; c_φ(z) = η · f(σ_λ(z)) + r_ρ(σ_λ(z)) (REBAR's decoder term on the relaxed sample
σ_λ, with frozen decoder weights, plus an MLP of `RELAX_UNITS` units whose output starts at 0), and φ =
(η, log λ, ρ) is trained on the single-sample variance proxy mean ‖ĝ_ℓ‖² (a second-order gradient through
nested tapes). Two decoder passes on relaxed samples and one on b per step.

`reinmax`: the hard sample with ReinMax's backward (Liu et al., "Bridging Discrete and Backpropagation:
Straight-Through and Beyond", NeurIPS 2023), the library's `StraightThrough(surrogate="reinmax")`: a
second-order approximation of the gradient of E[f(D)] from the Jacobians of the sample's mean μ at
ℓ and at μ⁻¹((D + μ(ℓ)) / 2) (`dab_keras.estimators.reinmax_surrogate`). `dab_reinmax`: the zoo's
residual DAB on that base, `DAB(surrogate="reinmax")` (the correction fitted to h minus the relaxation at
the annealed τ, as `dab`; the bridge ReinMax's gradient plus the correction's). Both are the zoo's VAE with
`sample_gradient="reinmax"`.

Test metrics (`evaluate`), all on the 10,000 test images binarized once (the zoo's
`binarized_test_sets(...)["dynamic"]`), latent noise seeded as in the zoo's protocol:

- `neg_elbo` (the table's primary metric): mean single-sample −ELBO in nats;
- `neg_iwae_k100`: the importance-weighted bound of k = `IWAE_K` samples on the first `IWAE_IMAGES`
  test images, nats;
- `reconstruction`: the decoder's Bernoulli negative log-likelihood −log p(x | z*) of the encoder's mode
  code z* (argmax one-hot per group / sign of the logit), nats, no sampling;
- `probe_accuracy`: a multinomial logistic regression (`linear_probe_accuracy`, NumPy + SciPy L-BFGS,
  L2 weight `PROBE_L2` fixed in advance) fitted on the mode codes of the first `PROBE_TRAIN` training
  images (binarized once, seed `PROBE_SEED`) and their labels, its accuracy on the mode codes of the
  test images.
"""

import functools
import math

import numpy as np

from benchmarks.study import tasks as tasks_lib
from benchmarks.study.gradient_quality import leave_one_out_baseline

VAE_BATCH = 100
VAE_LEARNING_RATE = 3e-3
#: τ decays exponentially from 1 to `MIN_TEMPERATURE` over these steps, then stays (budget-independent).
ANNEAL_STEPS = 1000
#: Hard samples per image of `reinforce` (decoder passes per step).
REINFORCE_SAMPLES = 4
IWAE_K = 100
IWAE_IMAGES = 1000
PROBE_TRAIN = 10_000
PROBE_SEED = 1905
PROBE_L2 = 1e-3
#: Optimizer steps per compiled call (the runner fits 25 steps at a time).
STEPS_PER_EXECUTION = 25
VAE_ESTIMATORS = ("straight_through", "relaxed", "dab", "dab_paper", "reinforce", "straight_through_mean", "relax",
                  "reinmax", "dab_reinmax")
#: Hidden units of RELAX's learned control-variate network r_ρ.
RELAX_UNITS = 128
#: Units of the test metrics (`"%"`: a fraction shown in percent).
VAE_UNITS = {"neg_elbo": "nats", f"neg_iwae_k{IWAE_K}": "nats", "reconstruction": "nats", "probe_accuracy": "%"}


def linear_probe_accuracy(train_codes, train_labels, test_codes, test_labels, l2=PROBE_L2, max_iter=100):
    """Test accuracy of a multinomial logistic regression fitted on training codes (NumPy + SciPy L-BFGS).

    Minimizes the mean cross-entropy of softmax(codes W + b) plus (l2 / 2) ‖W‖² on the training codes
    (float64, L-BFGS from zeros, at most `max_iter` iterations), then classifies the test codes by argmax.

    Args:
        train_codes: `(N, D)` features.
        train_labels: `(N,)` integer labels 0..C−1.
        test_codes: `(M, D)` features.
        test_labels: `(M,)` integer labels.
        l2: L2 weight on W (not b). Defaults to `PROBE_L2`.
        max_iter: L-BFGS iterations. Defaults to `100`.

    Returns:
        The fraction of test codes classified right, a float in [0, 1].

    Examples:
        >>> codes = np.array([[1.0, -1.0], [-1.0, 1.0]] * 5)
        >>> labels = np.array([0, 1] * 5)
        >>> linear_probe_accuracy(codes, labels, codes[:2], labels[:2])
        1.0
    """
    from scipy import optimize

    x = np.asarray(train_codes, "float64").reshape(len(train_codes), -1)
    y = np.asarray(train_labels).astype("int64").reshape(-1)
    classes = int(max(y.max(), np.max(test_labels))) + 1
    n, d = x.shape
    onehot = np.eye(classes)[y]

    def loss_and_grad(params):
        w, b = params[: d * classes].reshape(d, classes), params[d * classes :]
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -np.sum(onehot * log_p) / n + 0.5 * l2 * np.sum(w * w)
        residual = (np.exp(log_p) - onehot) / n
        return loss, np.concatenate([(x.T @ residual + l2 * w).ravel(), residual.sum(axis=0)])

    fitted = optimize.minimize(loss_and_grad, np.zeros(d * classes + classes), jac=True, method="L-BFGS-B",
                               options={"maxiter": max_iter})
    w, b = fitted.x[: d * classes].reshape(d, classes), fitted.x[d * classes :]
    test = np.asarray(test_codes, "float64").reshape(len(test_codes), -1)
    return float(np.mean(np.argmax(test @ w + b, axis=1) == np.asarray(test_labels).reshape(-1)))


@functools.cache  # one class, registered with Keras once
def _reinforce_class():
    import keras
    from keras import ops

    from dab_keras.zoo import vae_math, vae_model

    class ReinforceVAE(vae_model.DiscreteVAEModel):
        """The zoo's discrete VAE trained with REINFORCE and the leave-one-out baseline (m samples per image).

        Training draws m hard samples z_1..z_m of q(z|x) per image (no gradient through them), decodes all
        of them (m decoder passes) and minimizes the surrogate

            mean_i f_i + mean_i stop_gradient(f_i − mean_{j≠i} f_j) · log q(z_i|x) + KL(q ‖ p),

        f_i = −log p(x|z_i): its gradient is the decoder's ordinary gradient of mean_i f_i, and for the
        encoder the REINFORCE-LOO estimate of ∇ E_q[f] plus the analytic ∇ KL. The tracked `neg_elbo` is
        mean_i f_i + KL (the single-sample −ELBO averaged over the m samples). Outside training it is the
        zoo model (hard samples; its sampling layer's estimator is never used).
        """

        def __init__(self, samples=REINFORCE_SAMPLES, **kwargs):
            kwargs.setdefault("estimator", "straight_through")
            super().__init__(**kwargs)
            if not isinstance(samples, int) or samples < 2:
                raise ValueError(f"`samples` must be an integer >= 2 (leave-one-out baseline). Received: samples={samples!r}")
            self.samples = samples

        def call(self, inputs, training=None):
            if not training:
                return super().call(inputs, training=training)
            logits = self.posterior_logits(inputs)
            batch = ops.shape(logits)[0]
            repeated = ops.reshape(ops.repeat(ops.stop_gradient(logits)[None], self.samples, axis=0),
                                   (self.samples * batch, *self.latent_shape))
            codes = ops.stop_gradient(self.draw(repeated, training=False))
            return {"logits": self.decode(codes), "posterior_logits": logits, "codes": codes}

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            if "codes" not in y_pred:
                return super().compute_loss(x, y, y_pred, sample_weight, training)
            target = x if y is None else y
            logits = y_pred["posterior_logits"]
            batch, m = ops.shape(logits)[0], self.samples
            targets = ops.reshape(ops.repeat(ops.cast(target, "float32")[None], m, axis=0), (m * batch, -1))
            f = ops.reshape(vae_math.bernoulli_neg_log_likelihood(targets, y_pred["logits"]), (m, batch))
            repeated = ops.reshape(ops.repeat(logits[None], m, axis=0), (m * batch, *self.latent_shape))
            log_q = ops.reshape(self.log_q(repeated, y_pred["codes"]), (m, batch))
            advantage = ops.stop_gradient(f - leave_one_out_baseline(f, ops))
            kl = self.kl(logits)
            per_example = ops.mean(f, axis=0) + kl
            self.neg_elbo_tracker.update_state(per_example, sample_weight=sample_weight)
            return ops.mean(per_example + ops.mean(advantage * log_q, axis=0))

        def get_config(self):
            return {**super().get_config(), "samples": self.samples}

    return keras.saving.register_keras_serializable(package="benchmarks.study", name="ReinforceVAE")(ReinforceVAE)


@functools.cache  # one class, registered with Keras once
def _mean_straight_through_class():
    import keras
    from keras import ops

    from dab_keras.zoo import vae_model

    class MeanStraightThroughVAE(vae_model.DiscreteVAEModel):
        """The zoo's discrete VAE whose hard sample back-propagates through its mean given the logits.

        In training `draw` returns z + μ(ℓ) − stop_gradient(μ(ℓ)) (value: the hard sample z of ℓ + noise;
        gradient: the Jacobian of μ = softmax(ℓ), or tanh(ℓ/2) for ±1 bits); elsewhere it is the zoo model.
        """

        def __init__(self, **kwargs):
            kwargs.setdefault("estimator", "straight_through")
            super().__init__(**kwargs)

        def draw(self, logits, training=False, seed=None):
            hard = super().draw(logits, training=False, seed=seed)
            if not training:
                return hard
            mean = ops.softmax(logits, axis=-1) if self.latent == "categorical" else ops.tanh(logits / 2.0)
            return ops.stop_gradient(hard) + (mean - ops.stop_gradient(mean))

    return keras.saving.register_keras_serializable(package="benchmarks.study", name="MeanStraightThroughVAE")(
        MeanStraightThroughVAE)


def conditional_gumbel(log_probs, hard, u):
    r"""Gumbel perturbations of `log_probs` conditioned on their argmax being `hard` (REBAR's $\tilde z$).

    With $v$ uniform, $\tilde z_b = -\log(-\log v_b)$ for the chosen category b and
    $\tilde z_i = -\log\big(-\frac{\log v_i}{\pi_i} - \log v_b\big)$ for the others: a sample of
    $z = \log\pi + G$ given $\arg\max z = b$ (Tucker et al., 2017, appendix).

    Args:
        log_probs: Normalized log-probabilities log π, `(..., K)`.
        hard: One-hot `(..., K)`, the conditioning argmax.
        u: Uniform noise in (0, 1), `(..., K)`.

    Returns:
        `(..., K)` with argmax `hard`.
    """
    from keras import ops

    log_u = ops.log(u)
    log_u_b = ops.sum(hard * log_u, axis=-1, keepdims=True)
    chosen = -ops.log(-log_u)
    others = -ops.log(-log_u * ops.exp(-log_probs) - log_u_b)
    return hard * chosen + (1.0 - hard) * others


def conditional_logistic(logits, hard, u):
    r"""Logistic perturbations $\ell + L$ conditioned on their sign being `hard` (±1): the bits' $\tilde z$.

    $\operatorname{sign}(\ell + \operatorname{logit} u) = +1$ exactly when $u > 1 - p$ with
    $p = \sigma(\ell)$, so $u' = 1 - p + u p$ (for +1) or $u (1 - p)$ (for −1) gives
    $\tilde z = \ell + \operatorname{logit} u'$.

    Args:
        logits: ℓ, `(..., D)`.
        hard: ±1 of the same shape.
        u: Uniform noise in (0, 1).

    Returns:
        ℓ + logit(u'), of the sign `hard`.
    """
    from keras import ops

    plus = (hard + 1.0) / 2.0
    log_p, log_not_p = -ops.softplus(-logits), -ops.softplus(logits)
    log_1mu = ops.log1p(-u)
    # +1: u' = 1 − p(1 − u), 1 − u' = p (1 − u);   −1: u' = u (1 − p), 1 − u' = 1 − u (1 − p)
    log_up_plus = ops.log1p(-ops.exp(log_p + log_1mu))
    log_down_plus = log_p + log_1mu
    log_up_minus = ops.log(u) + log_not_p
    log_down_minus = ops.log1p(-ops.exp(log_up_minus))
    return logits + plus * (log_up_plus - log_down_plus) + (1.0 - plus) * (log_up_minus - log_down_minus)


@functools.cache  # one class, registered with Keras once
def _relax_class():
    import keras
    from keras import ops

    from dab_keras.estimators.dab import approximator_output
    from dab_keras.zoo import vae_math, vae_model

    class RelaxVAE(vae_model.DiscreteVAEModel):
        """The zoo's discrete VAE trained with RELAX (see the module docstring); TensorFlow backend only.

        In training, `call` returns the posterior logits and `compute_loss` draws b, z and z̃, decodes b,
        and builds a surrogate whose gradient is the decoder's ordinary gradient of f(b) = −log p(x|b), the
        RELAX estimate ĝ for the encoder logits, the analytic KL gradient, and for the control variate's
        parameters the gradient of the variance proxy mean ‖ĝ‖² (ĝ is computed with the logits and the
        decoder held constant, so that term reaches φ only). Elsewhere it is the zoo model.
        """

        def __init__(self, control_units=RELAX_UNITS, **kwargs):
            if keras.backend.backend() != "tensorflow":
                raise ValueError("RelaxVAE needs the TensorFlow backend (nested gradient tapes). "
                                 f"Received: backend {keras.backend.backend()!r}")
            kwargs.setdefault("estimator", "straight_through")
            super().__init__(**kwargs)
            self.control_units = control_units
            self.eta = self.add_weight(shape=(), initializer="ones", name="relax_eta")
            self.log_lambda = self.add_weight(shape=(), initializer=keras.initializers.Constant(math.log(0.5)),
                                              name="relax_log_lambda")
            self.control_hidden = keras.layers.Dense(control_units, activation="relu", name="relax_hidden")
            self.control_out = keras.layers.Dense(1, kernel_initializer="zeros", name="relax_out")

        def build(self, input_shape=(None, 28, 28, 1)):
            super().build(input_shape)
            self.control_hidden.build((None, math.prod(self.latent_shape)))
            self.control_out.build((None, self.control_units))

        def _frozen_decode(self, z):
            # The decoder with constant weights (the control variate must not train it): each layer run
            # as DAB runs its approximator, through `stateless_call` with stop-gradient weights.
            h = ops.reshape(ops.cast(z, "float32"), (ops.shape(z)[0], -1))
            for layer in [*self.decoder_layers, self.likelihood]:
                h = approximator_output(layer, h)
            return h

        def _relaxed(self, z):
            lam = ops.exp(self.log_lambda)
            if self.latent == "categorical":
                return ops.softmax(z / lam, axis=-1)
            return ops.tanh(z / (2.0 * lam))  # the binary Concrete on ±1

        def control_variate(self, z, target):
            """c_φ(z) per example: η · f(σ_λ(z)) (frozen decoder) + r_ρ(σ_λ(z))."""
            soft = self._relaxed(z)
            nll = vae_math.bernoulli_neg_log_likelihood(target, self._frozen_decode(soft))
            flat = ops.reshape(soft, (ops.shape(soft)[0], -1))
            return self.eta * nll + ops.squeeze(self.control_out(self.control_hidden(flat)), -1)

        def _samples(self, logits):
            # z (relaxed input), b = H(z) and z̃ ~ p(z | b), all functions of `logits` and fresh noise.
            shape = ops.shape(logits)
            u = keras.random.uniform(shape, minval=1e-6, maxval=1.0 - 1e-6, seed=self.noise)
            v = keras.random.uniform(shape, minval=1e-6, maxval=1.0 - 1e-6, seed=self.noise)
            if self.latent == "categorical":
                log_probs = ops.log_softmax(logits, axis=-1)
                z = log_probs - ops.log(-ops.log(u))
                hard = ops.stop_gradient(ops.one_hot(ops.argmax(z, axis=-1), self.categories, dtype="float32"))
                return z, hard, conditional_gumbel(log_probs, hard, v)
            z = logits + ops.log(u) - ops.log1p(-u)
            hard = ops.stop_gradient(ops.where(z >= 0.0, 1.0, -1.0))
            return z, hard, conditional_logistic(logits, hard, v)

        def call(self, inputs, training=None):
            if not training:
                return super().call(inputs, training=training)
            return {"relax_posterior_logits": self.posterior_logits(inputs)}

        def relax_gradient(self, logits, target):
            """(ĝ w.r.t. the logits, hard b, f(b) with the real decoder) for constant `logits`."""
            import tensorflow as tf

            fixed = ops.stop_gradient(logits)
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(fixed)
                z, hard, z_tilde = self._samples(fixed)
                c_tilde = self.control_variate(z_tilde, target)
                # Each example's terms depend on its own logits only: the sums' gradients are per example.
                total_log_q = ops.sum(self.log_q(fixed, hard))
                total_c_z = ops.sum(self.control_variate(z, target))
                total_c_tilde = ops.sum(c_tilde)
            score = tape.gradient(total_log_q, fixed)
            d_c_z = tape.gradient(total_c_z, fixed)
            d_c_tilde = tape.gradient(total_c_tilde, fixed)
            del tape
            f = vae_math.bernoulli_neg_log_likelihood(target, self.decode(hard))
            weight = ops.stop_gradient(f) - c_tilde
            weight = ops.reshape(weight, (-1,) + (1,) * (len(logits.shape) - 1))
            return weight * score + d_c_z - d_c_tilde, hard, f

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            if "relax_posterior_logits" not in y_pred:
                return super().compute_loss(x, y, y_pred, sample_weight, training)
            target = ops.cast(x if y is None else y, "float32")
            logits = y_pred["relax_posterior_logits"]
            g, _, f = self.relax_gradient(logits, target)
            axes = tuple(range(1, len(logits.shape)))
            kl = self.kl(logits)
            per_example = f + kl
            self.neg_elbo_tracker.update_state(per_example, sample_weight=sample_weight)
            encoder = ops.sum(ops.stop_gradient(g) * logits, axis=axes)
            variance = ops.sum(ops.square(g), axis=axes)
            return ops.mean(per_example + encoder + variance - ops.stop_gradient(variance))

        def get_config(self):
            return {**super().get_config(), "control_units": self.control_units}

    return keras.saving.register_keras_serializable(package="benchmarks.study", name="RelaxVAE")(RelaxVAE)


def relax_vae(**kwargs):
    """A `RelaxVAE` (the zoo's discrete VAE trained with RELAX): `control_units=` and the zoo model's args.

    Returns:
        An unbuilt `keras.Model` (TensorFlow backend).
    """
    return _relax_class()(**kwargs)


def reinforce_vae(**kwargs):
    """A `ReinforceVAE` (the zoo's discrete VAE trained with REINFORCE-LOO): `samples=` and the zoo model's args.

    Args:
        **kwargs: `samples` (m >= 2, default `REINFORCE_SAMPLES`) and `DiscreteVAEModel` arguments.

    Returns:
        An unbuilt `keras.Model`.
    """
    return _reinforce_class()(**kwargs)


def vae_data(path):
    """Training intensities, the fixed binary test set, and the probe's fixed binary training images.

    Args:
        path: MNIST `.npz` (Keras's layout) or `"tfds"`.

    Returns:
        A dict: `x_train` (intensities in [0, 1], binarized per batch by `vae_batch`), `y_train`, `x_test`
        (the zoo's dynamically binarized test set), `y_test`, `x_probe` / `y_probe` (the first
        `PROBE_TRAIN` training images binarized once with `PROBE_SEED`, and their labels).
    """
    from dab_keras.zoo import binarized_mnist
    from dab_keras.zoo import data as zoo_data

    mnist = zoo_data.load_mnist(path)
    probe = mnist["x_train"][:PROBE_TRAIN]
    return {
        "x_train": mnist["x_train"], "y_train": mnist["y_train"],
        "x_test": binarized_mnist.binarized_test_sets(path)["dynamic"], "y_test": mnist["y_test"],
        "x_probe": zoo_data.binarize(probe, "dynamic", seed=PROBE_SEED), "y_probe": mnist["y_train"][:PROBE_TRAIN],
    }


def vae_batch(data, index, rng):
    """A training batch: the images at `index` binarized with `rng` (Bernoulli of the intensities), no targets."""
    images = data["x_train"][index]
    return (rng.random(images.shape, dtype="float32") < images).astype("float32"), None


def mode_codes(model, images, batch_size=1000):
    """The encoder's mode code of each image: one-hot of the argmax per group, or the sign (±1) per bit.

    Args:
        model: A `DiscreteVAEModel`.
        images: `(N, 28, 28, 1)` binary images.
        batch_size: Images per encoder call. Defaults to `1000`.

    Returns:
        float32 `(N, G, K)` one-hots or `(N, D)` in {−1, +1}.
    """
    from keras import ops

    out = []
    for start in range(0, len(images), batch_size):
        logits = ops.convert_to_numpy(model.posterior_logits(images[start : start + batch_size]))
        if model.latent == "categorical":
            out.append(np.eye(logits.shape[-1], dtype="float32")[np.argmax(logits, axis=-1)])
        else:
            out.append(np.where(logits >= 0, 1.0, -1.0).astype("float32"))
    return np.concatenate(out)


def reconstruction_nll(model, images, codes, batch_size=1000):
    """Mean −log p(x | z) in nats of `images` decoded from `codes` (e.g. the mode codes)."""
    from keras import ops

    from dab_keras.zoo import vae_math

    total = 0.0
    for start in range(0, len(images), batch_size):
        x, z = images[start : start + batch_size], codes[start : start + batch_size]
        nll = vae_math.bernoulli_neg_log_likelihood(x, model.decode(z))
        total += float(np.sum(ops.convert_to_numpy(nll).astype("float64")))
    return total / len(images)


def evaluate_vae(model, data, iwae_k=None, iwae_images=None):
    """The VAE tasks' test metrics (see the module docstring): a dict, `neg_elbo` first.

    `iwae_k` and `iwae_images` default to `IWAE_K` and `IWAE_IMAGES`.
    """
    from dab_keras.zoo import vae_evaluation

    iwae_k, iwae_images = iwae_k or IWAE_K, iwae_images or IWAE_IMAGES

    x_test = data["x_test"]
    test_codes = mode_codes(model, x_test)
    return {
        "neg_elbo": vae_evaluation.mean_bound(model.neg_elbo, x_test),
        f"neg_iwae_k{iwae_k}": vae_evaluation.mean_bound(model.neg_iwae, x_test[:iwae_images], batch_size=100, k=iwae_k),
        "reconstruction": reconstruction_nll(model, x_test, test_codes),
        "probe_accuracy": linear_probe_accuracy(mode_codes(model, data["x_probe"]), data["y_probe"], test_codes,
                                                data["y_test"]),
    }


#: The zoo estimator that `sample_gradient="reinmax"` rebases for each ReinMax row.
_REINMAX_BASE = {"reinmax": "straight_through", "dab_reinmax": "dab"}


def _vae_builder(latent):
    def build(estimator, seed):
        import keras

        from dab_keras.zoo import vae_model

        keras.utils.set_random_seed(seed)
        if estimator == "reinforce":
            model = reinforce_vae(latent=latent, seed=seed)
        elif estimator == "relax":
            model = relax_vae(latent=latent, seed=seed)
        elif estimator == "straight_through_mean":
            model = _mean_straight_through_class()(latent=latent, seed=seed)
        elif estimator in ("reinmax", "dab_reinmax"):  # the zoo's own ReinMax-based estimators
            model = vae_model.DiscreteVAEModel(latent=latent, estimator=_REINMAX_BASE[estimator],
                                               dab_residual=estimator == "dab_reinmax",
                                               sample_gradient="reinmax", seed=seed)
        elif estimator in ("dab", "dab_paper"):
            model = vae_model.DiscreteVAEModel(latent=latent, estimator="dab", dab_residual=estimator == "dab",
                                               seed=seed)
        elif estimator in ("straight_through", "relaxed"):
            model = vae_model.DiscreteVAEModel(latent=latent, estimator=estimator, seed=seed)
        else:
            raise ValueError(f"The VAE tasks take the estimators {VAE_ESTIMATORS}. Received: estimator={estimator!r}")
        model.build()
        model.compile(optimizer=keras.optimizers.Adam(VAE_LEARNING_RATE), steps_per_execution=STEPS_PER_EXECUTION)
        return model

    return build


def _annealing():
    from dab_keras.zoo import vae

    return [vae.temperature_annealing(ANNEAL_STEPS)]


_LATENT_TEXT = {"categorical": "30 x 10 categorical (ArgMax of logits + Gumbel)",
                "binary": "200 bits (Sign of logits + logistic)"}

for _latent, _text in _LATENT_TEXT.items():
    tasks_lib.register_task(tasks_lib.Task(
        name=f"vae_{_latent}",
        description=(f"Discrete VAE on dynamically binarized MNIST, {_text}, MLP 512-256, batch {VAE_BATCH}, Adam "
                     f"{VAE_LEARNING_RATE:g}, tau 1 -> 0.3 over {ANNEAL_STEPS} steps"),
        build=_vae_builder(_latent),
        data=vae_data,
        batch_size=VAE_BATCH,
        metric="neg_elbo",
        evaluate=evaluate_vae,
        units=VAE_UNITS,
        loss_metric="neg_elbo",
        train_metric=None,
        make_batch=vae_batch,
        callbacks=_annealing,
        estimators=VAE_ESTIMATORS,
        held_out=False,  # the test set is binarized once, apart from the per-batch training binarization
    ))

tasks_lib.register_table(tasks_lib.Table(
    name="vae",
    description="Representation learning and density estimation: discrete VAEs on binarized MNIST",
    tasks=("vae_categorical", "vae_binary"),
    estimators=VAE_ESTIMATORS,
    steps=(1000, 3000),
))
