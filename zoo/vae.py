r"""`DiscreteVAE`: a variational autoencoder with a hard discrete latent code on binarized MNIST.

An MLP encoder 784 → 512 → 256 maps an image x to the logits of a factorized posterior q(z|x) over the
latent code z; one hard sample of z goes through an MLP decoder 256 → 512 → 784 to the logits of
independent Bernoulli pixels p(x|z). Two latent types:

- `latent="categorical"`: G groups of K categories (default 30 × 10). q(z|x) = ∏_g Cat(z_g; π_g(x)) with
  π_g = softmax(ℓ_g); the sample is z_g = one_hot(argmax_k(ℓ_{g,k} + G_{g,k})) with Gumbel noise
  G_{g,k} = −log(−log U) (the Gumbel-max trick, an exact sample), computed by `dab_keras.layers.ArgMax`.
  Prior p(z) = ∏_g Cat(1/K).
- `latent="binary"`: D bits (default 200). q(z|x) = ∏_j Bernoulli(σ(ℓ_j)) on {−1, +1}; the sample is
  z_j = Sign(ℓ_j + L_j) with logistic noise L_j = log U − log(1 − U) (P(z_j = +1) = σ(ℓ_j) exactly),
  computed by `dab_keras.layers.Sign`. Prior p(z) = ∏_j Bernoulli(1/2).

The sample is hard in the forward pass; its gradient comes from the estimator of the layer:

- `"relaxed"`: the Gumbel-Softmax / Concrete relaxation softmax((ℓ + G)/τ) (Jang et al. 2017; Maddison
  et al. 2017) — in training the decoder sees the relaxed sample; for the binary latent tanh((ℓ + L)/τ),
  the binary Concrete on {−1, +1}. τ decays exponentially from `temperature` (1.0) to `min_temperature`
  (0.3) over `anneal_steps` training steps, then stays there (as Jang et al. anneal it); evaluation
  always uses the hard sample, so the relaxation gap counts against the model.
- `"straight_through"`: the hard sample forward, the relaxation's gradient backward (straight-through
  Gumbel-Softmax; the identity for the binary latent).
- `"dab"`: the hard sample forward, the gradient of a small learned approximator g backward (Ramapuram &
  Webb 2019): a dense tanh MLP over the K categories of each group (`dab_keras.layers.AxisMLP`), or an
  element-wise MLP for the bits, trained on ‖g(ℓ + G) − z‖² with weight γ = 10 (its loss is added by
  the layer with `add_loss`).

The model draws the noise itself and feeds ℓ + G to a deterministic `ArgMax` (or `Sign`): the same
computation as `ArgMax(stochastic=True)`, whose noise comes from the layer's own generator, but a seed
given to `neg_elbo`, `neg_iwae` or `sample` then reproduces the sample exactly.

Objective: the negative evidence lower bound of one sample, in nats per image,

$$ -\mathrm{ELBO}(x) = -\log p(x \mid z) + \mathrm{KL}(q(z \mid x) \,\|\, p(z)), \qquad z \sim q(z \mid x), $$

$$ -\log p(x \mid z) = \sum_{i=1}^{784} \operatorname{softplus}(a_i) - x_i a_i \quad (a = \text{decoder
logits}), \qquad \mathrm{KL} = \sum_{g} \sum_{k} \pi_{g,k} \log \pi_{g,k} + G \log K $$

(binary: KL = Σ_j q_j log q_j + (1 − q_j) log(1 − q_j) + D log 2), the KL term analytic from the
posterior probabilities. Training minimizes its batch mean plus the estimator's own losses. `neg_iwae`
gives the importance-weighted bound of k samples (Burda et al. 2016),

$$ -\log \frac1k \sum_{i=1}^{k} \frac{p(x \mid z_i)\, p(z_i)}{q(z_i \mid x)}, \qquad z_i \sim q(z \mid x), $$

with the exact log q(z|x) = Σ_g log π_{g, z_g} of the hard sample; it is tighter than the ELBO and tends
to −log p(x) as k grows.

Data: MNIST with dynamic binarization for training (every pixel a fresh Bernoulli sample of its intensity
every epoch). The headline test metric `neg_elbo` is the mean single-sample negative ELBO on the 10,000
test images binarized dynamically ONCE with NumPy's generator seeded with `TEST_SEED`, with the model's
latent noise drawn from `keras.random.SeedGenerator(EVAL_SEED)` in batches of `EVAL_BATCH` images, so
repeated evaluations of the same weights agree; `neg_elbo_threshold` is the same on the test set
binarized at 0.5.

References:
    Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017, arXiv:1611.01144.
    Maddison, Mnih & Teh, "The Concrete Distribution", ICLR 2017, arXiv:1611.00712.
    Ramapuram & Webb, "Improving Discrete Latent Representations With Differentiable Approximation
    Bridges", 2019, arXiv:1905.03658.
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016, arXiv:1509.00519.
"""

import functools
import math

import keras
import numpy as np
from keras import ops

import dab_keras as dk
from dab_keras import _validation
from dab_keras import estimators as dab_estimators
from dab_keras.zoo import data as zoo_data
from dab_keras.zoo import task as zoo_task
from dab_keras.zoo import weights as zoo_weights

LATENTS = ("categorical", "binary")
#: The estimator whose weights ship, per latent: what `DiscreteVAE()` and `dab-zoo train` use by default.
DEFAULT_ESTIMATORS = {"categorical": "relaxed", "binary": "dab"}
#: Seed of the one dynamic binarization of the test set (NumPy's generator).
TEST_SEED = 20170101
#: Seed of the latent noise (`keras.random.SeedGenerator`) in evaluation.
EVAL_SEED = 1611
#: Images per batch in evaluation (the latent noise of a batch depends on it).
EVAL_BATCH = 1000
#: Number of pixels of an MNIST image.
PIXELS = 28 * 28
_MODEL_NAMES = {"categorical": "discrete_vae", "binary": "binary_vae"}


def _as_tuple(units):
    return (units,) if isinstance(units, int) else tuple(units)


def _estimator(estimator, latent, temperature, approximator_units, categories):
    """The estimator object of the sampling layer: names get the zoo's settings, objects pass through."""
    if not isinstance(estimator, str):
        return dab_estimators.get(estimator)
    key = zoo_weights.estimator_key(estimator)
    if key == "relaxed":
        return dab_estimators.Relaxed(temperature=temperature)
    if key == "straight_through":
        return dab_estimators.StraightThrough(temperature=temperature)
    if latent == "categorical":
        # A small dense MLP over the K categories of each group (shared by the groups).
        approximator = dk.layers.AxisMLP((categories,), units=approximator_units, name="approximator")
    else:
        approximator = dk.layers.ElementwiseMLP(units=approximator_units, name="approximator")
    return dab_estimators.DAB(approximator=approximator)


def bernoulli_neg_log_likelihood(x, logits):
    r"""−log p(x|z) of independent Bernoulli pixels, summed per example: Σ softplus(a) − x·a.

    $$ -\log p(x \mid z) = \sum_i \operatorname{softplus}(a_i) - x_i a_i, $$

    the Bernoulli cross-entropy with logits $a$, stable for large $|a|$.

    Args:
        x: `(B, ...)` targets in {0, 1} (or in [0, 1]).
        logits: Bernoulli logits, as many values per example as `x` has, in any shape with batch axis B.

    Returns:
        float32 `(B,)`, in nats.

    Examples:
        >>> import numpy as np
        >>> x = np.zeros((2, 28, 28, 1), "float32")
        >>> nll = bernoulli_neg_log_likelihood(x, np.zeros_like(x))  # 784 log 2 each
        >>> np.asarray(nll, "float64").round(2).tolist()
        [543.43, 543.43]
    """
    x = ops.reshape(ops.cast(x, "float32"), (ops.shape(x)[0], -1))
    logits = ops.reshape(ops.cast(logits, "float32"), (ops.shape(x)[0], -1))
    return ops.sum(ops.softplus(logits) - x * logits, axis=-1)


def categorical_kl_to_uniform(logits):
    """KL(∏_g Cat(softmax(ℓ_g)) ‖ ∏_g Cat(1/K)) = Σ_g Σ_k π log π + G log K, per example.

    Args:
        logits: `(B, G, K)` posterior logits (G and K known).

    Returns:
        float32 `(B,)` in [0, G log K], in nats.

    Examples:
        >>> import numpy as np
        >>> logits = np.stack([np.zeros((2, 4)), [[100.0, 0, 0, 0], [0, 0, 100.0, 0]]])
        >>> np.asarray(categorical_kl_to_uniform(logits), "float64").round(4).tolist()  # 0 and 2 log 4
        [0.0, 2.7726]
    """
    logits = ops.cast(logits, "float32")
    log_pi = ops.log_softmax(logits, axis=-1)
    groups, categories = logits.shape[-2], logits.shape[-1]
    return ops.sum(ops.exp(log_pi) * log_pi, axis=(-2, -1)) + groups * math.log(categories)


def bernoulli_kl_to_uniform(logits):
    """KL(∏_j Bernoulli(σ(ℓ_j)) ‖ ∏_j Bernoulli(1/2)) = Σ_j q log q + (1 − q) log(1 − q) + D log 2.

    Here q_j = σ(ℓ_j), with log q and log(1 − q) computed as −softplus(∓ℓ) (stable for large |ℓ|).

    Args:
        logits: `(B, D)` posterior logits (D known).

    Returns:
        float32 `(B,)` in [0, D log 2], in nats.

    Examples:
        >>> import numpy as np
        >>> logits = np.array([[0.0, 0.0, 0.0], [100.0, -100.0, 0.0]])
        >>> np.asarray(bernoulli_kl_to_uniform(logits), "float64").round(4).tolist()  # 0 and 2 log 2
        [0.0, 1.3863]
    """
    logits = ops.cast(logits, "float32")
    log_q, log_1mq = -ops.softplus(-logits), -ops.softplus(logits)
    q = ops.sigmoid(logits)
    per_bit = q * log_q + (1.0 - q) * log_1mq
    return ops.sum(per_bit, axis=-1) + logits.shape[-1] * math.log(2.0)


@keras.saving.register_keras_serializable(package="dab_keras.zoo", name="DiscreteVAE")
class DiscreteVAEModel(keras.Model):
    """The discrete-latent VAE built by `DiscreteVAE` (see the module docstring for the math).

    `call(x)` returns a dict: `"logits"` (Bernoulli logits of the reconstruction, `(B, 28, 28, 1)`) and
    `"posterior_logits"` (`(B, G, K)` or `(B, D)`). `fit(x)` (no targets; `fit(x, x)` works too) minimizes
    the mean single-sample negative ELBO plus the estimator's losses; `evaluate` reports it as `neg_elbo`
    (with hard samples; in training with `"relaxed"` the tracker shows the relaxed objective).

    Use `DiscreteVAE` to build one (it also loads weights); this class's defaults differ from it
    (no annealing: `min_temperature=None`, `anneal_steps=0`).

    Args:
        latent: `"categorical"` or `"binary"`. Defaults to `"categorical"`.
        estimator: Estimator of the sampling layer: a name (`"relaxed"`, `"straight_through"`, `"dab"`,
            with the zoo's settings) or an `Estimator`. Defaults to `"relaxed"`.
        groups: Number G >= 1 of categorical variables. Defaults to `30`.
        categories: Categories K >= 2 of each. Defaults to `10`.
        bits: Number D >= 1 of binary variables (`latent="binary"`). Defaults to `200`.
        hidden_units: Encoder widths (the decoder mirrors them). Defaults to `(512, 256)`.
        approximator_units: Hidden widths of the DAB approximator. Defaults to `(64,)`.
        temperature: Initial τ > 0 of the relaxation (`"relaxed"`, `"straight_through"` given by name).
            Defaults to `1.0`.
        min_temperature: τ > 0 after `anneal_steps` training steps, or `None` (fixed τ). Defaults to
            `None`.
        anneal_steps: Training steps of the exponential decay of τ (`0`: fixed τ). Defaults to `0`.
        seed: Seed of the latent noise generator. Defaults to `None` (Keras's global seed).
        **kwargs: `keras.Model` arguments (`name`, ...).

    Raises:
        ValueError: for an invalid argument (the message names it).

    Examples:
        >>> import numpy as np
        >>> model = DiscreteVAEModel(latent="binary", bits=8, hidden_units=(32,), seed=0)
        >>> model.build()
        >>> out = model(np.zeros((2, 28, 28, 1), "float32"))
        >>> tuple(out["logits"].shape), tuple(out["posterior_logits"].shape)
        ((2, 28, 28, 1), (2, 8))
        >>> model.compile(optimizer="adam")  # fit(x) minimizes the negative ELBO
    """

    def __init__(
        self,
        latent="categorical",
        estimator="relaxed",
        groups=30,
        categories=10,
        bits=200,
        hidden_units=(512, 256),
        approximator_units=(64,),
        temperature=1.0,
        min_temperature=None,
        anneal_steps=0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent = _validation.check_one_of("latent", latent, LATENTS)
        self.groups = _validation.check_int("groups", groups, 1)
        self.categories = _validation.check_int("categories", categories, 2)
        self.bits = _validation.check_int("bits", bits, 1)
        self.hidden_units = tuple(_validation.check_int("hidden_units", u, 1) for u in _as_tuple(hidden_units))
        self.approximator_units = tuple(
            _validation.check_int("approximator_units", u, 1) for u in _as_tuple(approximator_units)
        )
        self.temperature = _validation.check_positive_float("temperature", temperature)
        if min_temperature is not None:
            min_temperature = _validation.check_positive_float("min_temperature", min_temperature)
        self.min_temperature = min_temperature
        self.anneal_steps = _validation.check_int("anneal_steps", anneal_steps, 0)
        self.seed = seed
        self._estimator_arg = (
            estimator if isinstance(estimator, str) else dab_estimators.serialize(dab_estimators.get(estimator))
        )
        est = _estimator(estimator, self.latent, self.temperature, self.approximator_units, self.categories)

        self.flatten = keras.layers.Flatten(name="flatten")
        self.encoder_layers = [
            keras.layers.Dense(u, activation="relu", name=f"encoder_{i}") for i, u in enumerate(self.hidden_units)
        ]
        if self.latent == "categorical":
            self.latent_shape = (self.groups, self.categories)
            self.sampler = dk.layers.ArgMax(axis=-1, estimator=est, name="sample")
        else:
            self.latent_shape = (self.bits,)
            self.sampler = dk.layers.Sign(estimator=est, name="sample")
        self.posterior = keras.layers.Dense(math.prod(self.latent_shape), name="posterior_logits")
        self.decoder_layers = [
            keras.layers.Dense(u, activation="relu", name=f"decoder_{i}")
            for i, u in enumerate(reversed(self.hidden_units))
        ]
        self.likelihood = keras.layers.Dense(PIXELS, name="likelihood_logits")
        self.noise = keras.random.SeedGenerator(seed, name="latent_noise")
        # Training steps seen, for the temperature schedule (float32 counts exactly up to 2**24 steps).
        self.train_steps = self.add_weight(
            shape=(), initializer="zeros", trainable=False, dtype="float32", name="train_steps"
        )
        self.neg_elbo_tracker = keras.metrics.Mean(name="neg_elbo")

    # ------------------------------------------------------------------ building
    def build(self, input_shape=(None, 28, 28, 1)):
        shape = (None, PIXELS)
        for layer in self.encoder_layers:
            layer.build(shape)
            shape = (None, layer.units)
        self.posterior.build(shape)
        self.sampler.build((None, *self.latent_shape))
        shape = (None, math.prod(self.latent_shape))
        for layer in self.decoder_layers:
            layer.build(shape)
            shape = (None, layer.units)
        self.likelihood.build(shape)
        self.built = True

    # ------------------------------------------------------------------ pieces
    def posterior_logits(self, x):
        """Logits of q(z|x): `(B, G, K)` (categorical) or `(B, D)` (binary), float32.

        Args:
            x: `(B, 28, 28, 1)` (or `(B, 784)`) images.

        Returns:
            float32 `(B, G, K)` or `(B, D)` logits.
        """
        h = self.flatten(ops.cast(x, self.compute_dtype))
        for layer in self.encoder_layers:
            h = layer(h)
        logits = self.posterior(h)
        return ops.reshape(ops.cast(logits, "float32"), (-1, *self.latent_shape))

    def latent_noise(self, shape, seed=None):
        """Gumbel (categorical) or logistic (binary) noise of `shape` from `seed` (default: the model's).

        Gumbel: −log(−log U); logistic: log U − log(1 − U); U uniform in [1e-7, 1 − 1e-7].

        Args:
            shape: Shape of the noise (the logits').
            seed: An int, a `keras.random.SeedGenerator`, or `None` (the model's own generator).
                Defaults to `None`.

        Returns:
            float32 noise of `shape`.
        """
        u = keras.random.uniform(shape, minval=1e-7, maxval=1.0 - 1e-7, seed=self.noise if seed is None else seed)
        if self.latent == "categorical":
            return -ops.log(-ops.log(u))
        return ops.log(u) - ops.log1p(-u)

    def draw(self, logits, training=False, seed=None):
        """One sample of q(z|x) given its logits: hard (one-hot / ±1) unless training with `"relaxed"`.

        Args:
            logits: Posterior logits, `(B, G, K)` or `(B, D)`.
            training: Whether the sampling layer runs in training mode (its estimator applies; with
                `"dab"` it adds its loss). Defaults to `False`.
            seed: Seed of the noise (see `latent_noise`). Defaults to `None`.

        Returns:
            float32 codes shaped like `logits`: one-hot along K, or ±1 (relaxed values in training with
            `"relaxed"`).
        """
        return self.sampler(logits + self.latent_noise(ops.shape(logits), seed), training=training)

    def decode(self, z):
        """Bernoulli logits `(B, 28, 28, 1)` of p(x|z) for codes `z` (`(B, G, K)` one-hots or `(B, D)` ±1).

        Args:
            z: Codes, `(B, G, K)` one-hots (categorical) or `(B, D)` in {−1, +1} (binary).

        Returns:
            `(B, 28, 28, 1)` pixel logits in the compute dtype (`keras.ops.sigmoid` gives probabilities).

        Examples:
            >>> from dab_keras.zoo import DiscreteVAE
            >>> model = DiscreteVAE(weights=None)
            >>> z = model.prior_sample(2, seed=0)
            >>> tuple(z.shape), tuple(model.decode(z).shape)
            ((2, 30, 10), (2, 28, 28, 1))
        """
        h = ops.reshape(ops.cast(z, self.compute_dtype), (ops.shape(z)[0], -1))
        for layer in self.decoder_layers:
            h = layer(h)
        return ops.reshape(self.likelihood(h), (-1, 28, 28, 1))

    def encode(self, x):
        """Posterior probabilities: `(B, G, K)` category probabilities or `(B, D)` probabilities of +1.

        Args:
            x: `(B, 28, 28, 1)` (or `(B, 784)`) images.

        Returns:
            float32 `(B, G, K)` (each group sums to 1) or `(B, D)` in (0, 1).

        Examples:
            >>> import numpy as np
            >>> from dab_keras.zoo import DiscreteVAE
            >>> model = DiscreteVAE(weights=None)
            >>> probs = np.asarray(model.encode(np.zeros((2, 28, 28, 1), "float32")))
            >>> probs.shape, np.allclose(probs.sum(-1), 1.0, atol=1e-5)
            ((2, 30, 10), True)
        """
        logits = self.posterior_logits(x)
        return ops.softmax(logits, axis=-1) if self.latent == "categorical" else ops.sigmoid(logits)

    def kl(self, logits):
        """KL(q(z|x) ‖ p(z)) per example, analytic, from the posterior logits.

        Args:
            logits: Posterior logits, `(B, G, K)` or `(B, D)`.

        Returns:
            float32 `(B,)` in nats (`categorical_kl_to_uniform` or `bernoulli_kl_to_uniform`).
        """
        if self.latent == "categorical":
            return categorical_kl_to_uniform(logits)
        return bernoulli_kl_to_uniform(logits)

    def log_q(self, logits, z):
        """Exact log q(z|x) of hard samples `z` (one-hot or ±1), per example.

        Σ_g log π_{g, z_g} (categorical) or Σ_j log σ(±ℓ_j) (binary, the sign of z_j).

        Args:
            logits: Posterior logits, `(B, G, K)` or `(B, D)`.
            z: Hard codes shaped like `logits`.

        Returns:
            float32 `(B,)`, <= 0.
        """
        logits = ops.cast(logits, "float32")
        z = ops.cast(z, "float32")
        if self.latent == "categorical":
            return ops.sum(z * ops.log_softmax(logits, axis=-1), axis=(-2, -1))
        plus = (z + 1.0) / 2.0
        return ops.sum(-plus * ops.softplus(-logits) - (1.0 - plus) * ops.softplus(logits), axis=-1)

    def log_prior(self):
        """log p(z) of every code under the uniform prior: −G log K or −D log 2.

        Returns:
            A Python float.
        """
        if self.latent == "categorical":
            return -self.groups * math.log(self.categories)
        return -self.bits * math.log(2.0)

    def prior_sample(self, n, seed=None):
        """`n` codes from the uniform prior: `(n, G, K)` one-hots or `(n, D)` in {−1, +1}.

        Args:
            n: Number of codes.
            seed: An int, a `keras.random.SeedGenerator`, or `None` (the model's own generator).
                Defaults to `None`.

        Returns:
            float32 `(n, G, K)` one-hots or `(n, D)` in {−1, +1}.
        """
        seed = self.noise if seed is None else seed
        if self.latent == "categorical":
            u = keras.random.uniform((n, *self.latent_shape), seed=seed)
            return ops.one_hot(ops.argmax(u, axis=-1), self.categories, dtype="float32")
        u = keras.random.uniform((n, self.bits), seed=seed)
        return ops.where(u < 0.5, -1.0, 1.0)

    # ------------------------------------------------------------------ public API
    @property
    def anneals(self):
        """Whether `fit` anneals the sampling layer's temperature (see `scheduled_temperature`)."""
        return (
            self.min_temperature is not None
            and self.anneal_steps > 0
            and getattr(self.sampler, "temperature", None) is not None
        )

    def scheduled_temperature(self, step):
        r"""τ after `step` training steps: $\tau_0 (\tau_{\min}/\tau_0)^{\min(t/T, 1)}$ (exponential decay).

        τ₀ is `temperature`, τ_min `min_temperature`, T `anneal_steps`. `fit` assigns it to the sampling
        layer's temperature before each training step.

        Args:
            step: Number of training steps done (an int or scalar tensor).

        Returns:
            A float32 scalar tensor: τ₀ when the model does not anneal (`anneals` is false).
        """
        if not self.anneals:
            return ops.convert_to_tensor(self.temperature, "float32")
        fraction = ops.minimum(ops.cast(step, "float32") / float(self.anneal_steps), 1.0)
        return self.temperature * ops.power(self.min_temperature / self.temperature, fraction)

    def call(self, inputs, training=None):
        if training and self.anneals:
            # The schedule lives in the model's state, so it works in `fit` on every backend (the step
            # counter and τ are non-trainable variables updated in the forward pass).
            self.sampler.temperature.assign(self.scheduled_temperature(self.train_steps))
            self.train_steps.assign(self.train_steps + 1.0)
        logits = self.posterior_logits(inputs)
        z = self.draw(logits, training=training)
        return {"logits": self.decode(z), "posterior_logits": logits}

    def neg_elbo(self, x, seed=None):
        """Single-sample negative ELBO in nats per example, `(B,)`: −log p(x|z) + KL, z ~ q(z|x) hard.

        Args:
            x: `(B, 28, 28, 1)` (or `(B, 784)`) binary images.
            seed: Seed of the latent sample: an int, a `keras.random.SeedGenerator`, or `None` (the
                model's own generator). Defaults to `None`.

        Returns:
            float32 `(B,)`, in nats.

        Examples:
            >>> import numpy as np
            >>> from dab_keras.zoo import DiscreteVAE
            >>> model = DiscreteVAE()  # the shipped weights of "relaxed"
            >>> x = np.zeros((2, 28, 28, 1), "float32")  # blank images
            >>> bounds = np.asarray(model.neg_elbo(x, seed=0))
            >>> bounds.shape, bool((bounds > 0).all())
            ((2,), True)
        """
        logits = self.posterior_logits(x)
        z = self.draw(logits, training=False, seed=seed)
        return bernoulli_neg_log_likelihood(x, self.decode(z)) + self.kl(logits)

    def neg_iwae(self, x, k=100, seed=None, chunk=None):
        """Importance-weighted bound of `k` samples, −log (1/k) Σ p(x|z_i) p(z_i) / q(z_i|x), per example.

        Args:
            x: `(B, 28, 28, 1)` (or `(B, 784)`) binary images.
            k: Number of samples, >= 1 (k = 1 gives a single-sample ELBO with the sampled KL). Defaults
                to `100`.
            seed: An int (turned into a `keras.random.SeedGenerator`, so the k samples differ), a
                `keras.random.SeedGenerator`, or `None` (the model's own generator). Defaults to `None`.
            chunk: Samples decoded at once. Defaults to `None`: enough for about 100,000 decoded images.

        Returns:
            float32 `(B,)`, in nats.

        Raises:
            ValueError: if `k` is not an integer >= 1.

        Examples:
            >>> import numpy as np
            >>> from dab_keras.zoo import DiscreteVAE
            >>> model = DiscreteVAE(weights=None)
            >>> x = np.zeros((2, 28, 28, 1), "float32")
            >>> tuple(model.neg_iwae(x, k=4, seed=0).shape)
            (2,)
        """
        k = _validation.check_int("k", k, 1)
        if isinstance(seed, int):
            seed = keras.random.SeedGenerator(seed)
        logits = self.posterior_logits(x)
        batch = int(ops.shape(logits)[0])
        chunk = chunk or max(1, min(k, 100_000 // max(batch, 1)))
        flat_x = ops.reshape(ops.cast(x, "float32"), (batch, -1))
        log_w = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            rep = ops.repeat(logits[None], n, axis=0)  # (n, B, ...)
            rep = ops.reshape(rep, (n * batch, *self.latent_shape))
            z = self.draw(rep, training=False, seed=seed)
            xs = ops.reshape(ops.repeat(flat_x[None], n, axis=0), (n * batch, -1))
            lw = -bernoulli_neg_log_likelihood(xs, self.decode(z)) + self.log_prior() - self.log_q(rep, z)
            log_w.append(ops.reshape(lw, (n, batch)))
        log_w = ops.concatenate(log_w, axis=0)
        return -(ops.logsumexp(log_w, axis=0) - math.log(k))

    def sample(self, n, seed=None):
        """`n` images (pixel probabilities, `(n, 28, 28, 1)`) decoded from codes of the uniform prior.

        Args:
            n: Number of images, an integer >= 1.
            seed: An int, a `keras.random.SeedGenerator`, or `None` (the model's own generator).
                Defaults to `None`.

        Returns:
            `(n, 28, 28, 1)` Bernoulli means in (0, 1).

        Raises:
            ValueError: if `n` is not an integer >= 1.

        Examples:
            >>> from dab_keras.zoo import DiscreteVAE
            >>> images = DiscreteVAE(latent="binary", estimator="dab").sample(4, seed=0)
            >>> tuple(images.shape)
            (4, 28, 28, 1)
        """
        n = _validation.check_int("n", n, 1)
        return ops.sigmoid(self.decode(self.prior_sample(n, seed)))

    # ------------------------------------------------------------------ training
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        target = x if y is None else y
        per_example = bernoulli_neg_log_likelihood(target, y_pred["logits"]) + self.kl(y_pred["posterior_logits"])
        self.neg_elbo_tracker.update_state(per_example, sample_weight=sample_weight)
        if sample_weight is not None:
            w = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            loss = ops.sum(per_example * w) / ops.maximum(ops.sum(w), 1e-12)
        else:
            loss = ops.mean(per_example)
        for extra in self.losses:  # the estimator's losses (DAB), added by the layers in training
            loss = loss + ops.cast(extra, "float32")
        return loss

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "latent": self.latent,
            "estimator": self._estimator_arg,
            "groups": self.groups,
            "categories": self.categories,
            "bits": self.bits,
            "hidden_units": list(self.hidden_units),
            "approximator_units": list(self.approximator_units),
            "temperature": self.temperature,
            "min_temperature": self.min_temperature,
            "anneal_steps": self.anneal_steps,
            "seed": self.seed,
        }


def DiscreteVAE(
    latent="categorical",
    estimator=None,
    groups=30,
    categories=10,
    bits=200,
    hidden_units=(512, 256),
    approximator_units=(64,),
    temperature=1.0,
    min_temperature=0.3,
    anneal_steps=36_000,
    weights="pretrained",
    name=None,
):
    """Builds the discrete-latent VAE of binarized MNIST: `(B, 28, 28, 1)` images in {0, 1}.

    Args:
        latent: `"categorical"` (G groups of K categories, `dab_keras.layers.ArgMax` on Gumbel-perturbed
            logits) or `"binary"` (D bits, `dab_keras.layers.Sign` on logistic-perturbed logits).
            Defaults to `"categorical"`.
        estimator: `"relaxed"` (Gumbel-Softmax / binary Concrete at `temperature`), `"straight_through"`,
            `"dab"` (a dense approximator of `approximator_units` over the categories; element-wise for
            bits) or an `Estimator`. Defaults to `None`: the estimator whose weights ship for `latent`
            (`DEFAULT_ESTIMATORS`: `"relaxed"` for categorical, `"dab"` for binary).
        groups: Number G of categorical latent variables. Defaults to `30`.
        categories: Categories K of each. Defaults to `10`.
        bits: Number D of binary latent variables (`latent="binary"` only). Defaults to `200`.
        hidden_units: Encoder widths; the decoder mirrors them. Defaults to `(512, 256)`.
        approximator_units: Hidden widths of the DAB approximator. Defaults to `(64,)`.
        temperature: Initial τ of the relaxation of `"relaxed"` and `"straight_through"`. Defaults to
            `1.0`.
        min_temperature: τ reached after `anneal_steps` training steps (exponential decay, then constant);
            `None` keeps τ fixed (e.g. to anneal with `dab_keras.callbacks.TemperatureSchedule` instead).
            Defaults to `0.3`.
        anneal_steps: Length of the decay in training steps (`0`: no annealing). Defaults to `36_000`
            (the recipe's 60 epochs of 600 batches).
        weights: `"pretrained"` (shipped weights for `estimator`), `None`, or a `.weights.h5` path.
            Defaults to `"pretrained"`.
        name: Model name. Defaults to `"discrete_vae"` or `"binary_vae"`.

    Returns:
        A built, uncompiled `DiscreteVAEModel` with `encode`, `decode`, `sample`, `neg_elbo`, `neg_iwae`.

    Raises:
        ValueError: for an invalid argument, an unknown estimator, or weights that do not match (another
            configuration, no shipped weights for the estimator, a damaged file).

    Examples:
        >>> import numpy as np
        >>> from dab_keras.zoo import DiscreteVAE
        >>> model = DiscreteVAE(weights=None)
        >>> x = np.zeros((2, 28, 28, 1), "float32")
        >>> tuple(model.encode(x).shape), tuple(model.sample(3, seed=0).shape), tuple(model.neg_elbo(x).shape)
        ((2, 30, 10), (3, 28, 28, 1), (2,))
    """
    latent = _validation.check_one_of("latent", latent, LATENTS)
    if estimator is None:
        estimator = DEFAULT_ESTIMATORS[latent]
    key = zoo_weights.estimator_key(estimator)
    model_name = _MODEL_NAMES[latent]
    model = DiscreteVAEModel(
        latent=latent,
        estimator=estimator,
        groups=groups,
        categories=categories,
        bits=bits,
        hidden_units=hidden_units,
        approximator_units=approximator_units,
        temperature=temperature,
        min_temperature=min_temperature,
        anneal_steps=anneal_steps,
        name=name or model_name,
    )
    model.build((None, 28, 28, 1))
    # The arguments the weights must match (the ones that do not shape any weight or the estimator in
    # use, such as `bits` of a categorical model, are not checked).
    config = {"latent": latent, "hidden_units": list(model.hidden_units)}
    if latent == "categorical":
        config.update(groups=model.groups, categories=model.categories)
    else:
        config.update(bits=model.bits)
    if key == "dab":
        config["approximator_units"] = list(model.approximator_units)
    elif key in ("relaxed", "straight_through"):
        config["temperature"] = model.temperature
    zoo_weights.load(model, weights, model_name, key, config)
    return model


class DynamicallyBinarizedMNIST(keras.utils.PyDataset):
    """Shuffled batches of MNIST images, each pixel a fresh Bernoulli sample of its intensity every epoch.

    Epoch `e` visits the images in the order of NumPy's generator seeded with `(seed, e)`; batch `i`
    of epoch `e` is binarized with the generator seeded with `(seed, e, i)`. So a run is reproducible, a
    resumed run continues with new samples, and no TensorFlow is needed (JAX backend).

    Args:
        images: float `(N, 28, 28, 1)` intensities in [0, 1].
        batch_size: Images per batch, >= 1 (the last batch of an epoch may be smaller).
        seed: Seed of the order and the binarization. Defaults to `0`.
        initial_epoch: Epoch the first `fit` epoch counts as. Defaults to `0`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, `use_multiprocessing`, ...).

    Examples:
        >>> import numpy as np
        >>> data = DynamicallyBinarizedMNIST(np.full((10, 28, 28, 1), 0.5, "float32"), batch_size=4)
        >>> len(data), data[2].shape, sorted(np.unique(data[0]).tolist())
        (3, (2, 28, 28, 1), [0.0, 1.0])
    """

    def __init__(self, images, batch_size, seed=0, initial_epoch=0, **kwargs):
        super().__init__(**kwargs)
        self.images = np.asarray(images, dtype="float32")
        self.batch_size = _validation.check_int("batch_size", batch_size, 1)
        self.seed = int(seed)
        self.epoch = int(initial_epoch)
        self._order_epoch, self._order = None, None

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def _permutation(self):
        if self._order_epoch != self.epoch:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))
            self._order_epoch = self.epoch
        return self._order

    def __getitem__(self, index):
        if index >= len(self):
            raise IndexError(f"Batch {index} out of range ({len(self)} batches).")
        idx = np.sort(self._permutation()[index * self.batch_size : (index + 1) * self.batch_size])
        return zoo_data.binarize(self.images[idx], "dynamic", seed=[self.seed, self.epoch, index])

    def on_epoch_end(self):
        self.epoch += 1


def binarized_test_sets(data="tfds"):
    """The two fixed binary test sets: `{"dynamic": ..., "threshold": ...}`, `(10000, 28, 28, 1)` each.

    `"dynamic"` is one Bernoulli sample of the test intensities (NumPy's generator seeded with
    `TEST_SEED`); `"threshold"` is 1 where the intensity exceeds 0.5.

    Args:
        data: MNIST source: `"tfds"` or the path of a `.npz` (see `dab_keras.zoo.data.load_mnist`).
            Defaults to `"tfds"`.

    Returns:
        A dict of two float32 arrays with values in {0, 1}, shaped like the test images.

    Examples:
        ```python
        sets = binarized_test_sets()  # TensorFlow Datasets' MNIST test split
        mean_bound(model.neg_elbo, sets["dynamic"])  # the headline `neg_elbo`
        ```
    """
    images = zoo_data.load_mnist(data)["x_test"]
    return {
        "dynamic": zoo_data.binarize(images, "dynamic", seed=TEST_SEED),
        "threshold": zoo_data.binarize(images, "threshold"),
    }


def mean_bound(fn, images, batch_size=EVAL_BATCH, seed=EVAL_SEED, **kwargs):
    """Mean over `images` of `fn(x, seed=generator, **kwargs)` (e.g. `model.neg_elbo`), batch by batch.

    The latent noise comes from one `keras.random.SeedGenerator(seed)` for the whole pass, so the result
    is reproducible for a given batch size.

    Args:
        fn: Function `(x, seed=generator, **kwargs) -> (B,)` values, e.g. `model.neg_elbo`.
        images: Array of images (any length N >= 1).
        batch_size: Images per call of `fn`. Defaults to `EVAL_BATCH` (1,000).
        seed: Seed of the generator. Defaults to `EVAL_SEED`.
        **kwargs: Further arguments of `fn` (e.g. `k` of `neg_iwae`).

    Returns:
        The mean as a Python float (summed in float64).

    Examples:
        >>> import numpy as np
        >>> mean_bound(lambda x, seed: np.arange(len(x), dtype="float32"), np.zeros((5, 28, 28, 1)),
        ...            batch_size=2)  # batches of 2, 2 and 1: values 0, 1, 0, 1, 0
        0.4
    """
    generator = keras.random.SeedGenerator(seed)
    total = 0.0
    for start in range(0, len(images), batch_size):
        values = ops.convert_to_numpy(fn(images[start : start + batch_size], seed=generator, **kwargs))
        total += float(np.sum(values.astype("float64")))
    return total / len(images)


class VAETask(zoo_task.Task):
    """Training recipe of the discrete VAE: dynamically binarized MNIST, Adam with cosine decay.

    Recipe: batch 100, Adam at 3e-3 with cosine decay to zero (no warm-up), 60 epochs (36,000 steps,
    3.6 M images), 10 steps per compiled call; τ of `"relaxed"` / `"straight_through"` decays from 1.0 to
    0.3 over the run (the constructor's defaults). About 15 minutes on two CPU cores (TensorFlow).

    Test `neg_elbo` of this recipe (seed 0, TensorFlow, two shared CPU cores): 101.5 nats with
    `"relaxed"` (IWAE k=100: 93.2; 877 s), 116.7 with `"dab"` (IWAE: 105.3; 1092 s); `binary_vae` with
    `"dab"`: 122.5 (IWAE: 111.3; 1231 s). Jang et al. (2017) report about 101.5 for a 20 × 10
    Gumbel-Softmax VAE.

    Args:
        latent: `"categorical"` (registered as `"discrete_vae"`) or `"binary"` (`"binary_vae"`).
            Defaults to `"categorical"`.

    Raises:
        ValueError: for another `latent`.

    Examples:
        >>> task = VAETask("binary")
        >>> task.name, task.default_estimator, task.epochs
        ('binary_vae', 'dab', 60)
    """

    batch_size = 100
    learning_rate = 3e-3
    warmup_steps = 0
    #: 60 epochs of 600 batches: the constructor's `anneal_steps` (36,000) spans the run.
    epochs = 60
    steps_per_execution = 10
    #: Samples of the importance-weighted bound in evaluation (`0` skips it) and images it runs on.
    iwae_k = 100
    iwae_images = 10_000

    def __init__(self, latent="categorical"):
        self.latent = _validation.check_one_of("latent", latent, LATENTS)
        self.name = _MODEL_NAMES[self.latent]
        self.default_estimator = DEFAULT_ESTIMATORS[self.latent]
        if self.latent == "categorical":
            self.constructor = DiscreteVAE
            self.description = (
                "discrete VAE, 30x10 categorical latent, on binarized MNIST: (B, 28, 28, 1) -> neg. ELBO"
            )
        else:
            # `dab_keras.zoo.train` records the constructor's defaults in manifests: latent="binary" here.
            self.constructor = functools.partial(DiscreteVAE, latent="binary")
            self.description = (
                "discrete VAE, 200-bit binary latent, on binarized MNIST: (B, 28, 28, 1) -> neg. ELBO"
            )

    def build(self, estimator, weights=None, **config):
        config = {**config, "latent": self.latent}
        return DiscreteVAE(estimator=estimator, weights=weights, **config)

    def train_data(self, batch_size, seed, data="tfds", initial_epoch=0):
        images = zoo_data.load_mnist(data)["x_train"]
        x = DynamicallyBinarizedMNIST(images, batch_size, seed=seed, initial_epoch=initial_epoch)
        source = zoo_data.describe_source(data)
        return zoo_task.TrainData(
            x=x,
            steps_per_epoch=len(x),
            epoch_size=len(images),
            description=(
                f"MNIST train ({len(images)} images, {source}), dynamically binarized every epoch, seed {seed}"
            ),
        )

    def evaluate(self, model, data="tfds", batch_size=None, verbose=0, iwae_k=None, iwae_images=None):
        """Test bounds in nats per image (lower is better), reproducible for given weights.

        - `neg_elbo` (headline): mean single-sample negative ELBO on the 10,000 test images binarized
          dynamically once with NumPy's generator seeded with `TEST_SEED`, the latent noise from
          `keras.random.SeedGenerator(EVAL_SEED)` in batches of `batch_size` (default `EVAL_BATCH`).
          The backends' random streams differ: TensorFlow and JAX give values about 0.2 nats apart.
        - `neg_elbo_threshold`: the same on the test set binarized at 0.5.
        - `neg_iwae_k<k>`: the importance-weighted bound of `iwae_k` samples (default `iwae_k` = 100) on
          the first `iwae_images` dynamically binarized test images (batches of `batch_size // 10`).

        Args:
            model: A `DiscreteVAEModel`.
            data: MNIST source (`"tfds"` or an `.npz` path). Defaults to `"tfds"`.
            batch_size: Images per batch of the ELBO. Defaults to `None` (`EVAL_BATCH`).
            verbose: Unused (the bounds run batch by batch without a progress bar). Defaults to `0`.
            iwae_k: Samples of the importance-weighted bound; `0` skips it. Defaults to `None`
                (`VAETask.iwae_k`, 100).
            iwae_images: Test images of the importance-weighted bound. Defaults to `None`
                (`VAETask.iwae_images`, 10,000).

        Returns:
            A dict with `neg_elbo`, `neg_elbo_threshold`, `neg_iwae_k<k>` and `iwae_images` (when
            `iwae_k` > 0), and `test_images`.
        """
        iwae_k = self.iwae_k if iwae_k is None else iwae_k
        iwae_images = self.iwae_images if iwae_images is None else iwae_images
        sets = binarized_test_sets(data)
        batch_size = batch_size or EVAL_BATCH
        metrics = {
            "neg_elbo": mean_bound(model.neg_elbo, sets["dynamic"], batch_size),
            "neg_elbo_threshold": mean_bound(model.neg_elbo, sets["threshold"], batch_size),
        }
        if iwae_k:
            images = sets["dynamic"][:iwae_images]
            metrics[f"neg_iwae_k{iwae_k}"] = mean_bound(
                model.neg_iwae, images, max(1, batch_size // 10), k=iwae_k
            )
            metrics["iwae_images"] = int(len(images))
        metrics["test_images"] = int(len(sets["dynamic"]))
        return metrics
