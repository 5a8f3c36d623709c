r"""`DiscreteVAEModel`: a variational autoencoder with a hard discrete latent code on binarized MNIST.

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
  the binary Concrete on {−1, +1}. τ starts at `temperature` (1.0); the recipe anneals it to 0.3 over
  the run with `dab_keras.callbacks.TemperatureSchedule` (`dab_keras.zoo.vae.temperature_annealing`,
  as Jang et al. anneal it); evaluation always uses the hard sample, so the relaxation gap counts
  against the model.
- `"straight_through"`: the hard sample forward, the relaxation's gradient backward (straight-through
  Gumbel-Softmax; for the binary latent the straight-through binary Concrete, tanh((ℓ + L)/τ), not the
  identity: with the identity's gradient the binary encoder's posterior turns deterministic and the KL
  reaches its maximum, 200 log 2 nats, on every seed of `benchmarks/study`'s `vae` table).
- `"dab"`: the hard sample forward, the gradient of a small learned approximator g backward (Ramapuram &
  Webb 2019): a dense tanh MLP over the K categories of each group (`dab_keras.layers.AxisMLP`), or an
  element-wise MLP for the bits, trained on ‖g(ℓ + G) − z‖² with weight γ = 10 (its loss is added by
  the layer with `add_loss`). With `dab_residual=True`, g is the straight-through relaxation above plus
  the learned correction (`DAB(residual=True)`, whose "auto" base is the relaxation for `ArgMax`;
  `surrogate="relaxation"` for the bits).

In training the decoder is fitted to the code it decodes: the relaxed sample with `"relaxed"`, the hard
one otherwise. `decoder_codes="relaxed"` fits it to the relaxed sample whatever the estimator (and
`"hard"` to the hard one): from one draw of the noise, the sampling layer's output trains the encoder
through the estimator with the decoder's weights held fixed, and the other code, held fixed, trains the
decoder. On the zoo's recipe a relaxed-code decoder brings straight-through on ReinMax 3.4 nats −ELBO
closer to the Gumbel-Softmax (`benchmarks/RESULTS.md`, "Which codes the decoder trains on").

The model draws the noise itself (Gumbel noise from `dab_keras.ops.gumbel_noise`, the op
`ArgMax(stochastic=True)` uses) and feeds ℓ + G to a deterministic `ArgMax` (or `Sign`): the same
computation as `ArgMax(stochastic=True)`, whose noise comes from the layer's own generator, but a seed
given to `neg_elbo`, `neg_iwae` or `sample` then reproduces the sample exactly.

Objective: the negative evidence lower bound of one sample, in nats per image,

$$ -\mathrm{ELBO}(x) = -\log p(x \mid z) + \mathrm{KL}(q(z \mid x) \,\|\, p(z)), \qquad z \sim q(z \mid x), $$

$$ -\log p(x \mid z) = \sum_{i=1}^{784} \operatorname{softplus}(a_i) - x_i a_i \quad (a = \text{decoder
logits}), \qquad \mathrm{KL} = \sum_{g} \sum_{k} \pi_{g,k} \log \pi_{g,k} + G \log K $$

(binary: KL = Σ_j q_j log q_j + (1 − q_j) log(1 − q_j) + D log 2), the KL term analytic from the
posterior probabilities (the terms are in `dab_keras.zoo.vae_math`). Training minimizes its batch mean
plus the estimator's own losses. `neg_iwae` gives the importance-weighted bound of k samples (Burda et
al. 2016),

$$ -\log \frac1k \sum_{i=1}^{k} \frac{p(x \mid z_i)\, p(z_i)}{q(z_i \mid x)}, \qquad z_i \sim q(z \mid x), $$

with the exact log q(z|x) = Σ_g log π_{g, z_g} of the hard sample; it is tighter than the ELBO and tends
to −log p(x) as k grows.

References:
    Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017, arXiv:1611.01144.
    Maddison, Mnih & Teh, "The Concrete Distribution", ICLR 2017, arXiv:1611.00712.
    Ramapuram & Webb, "Improving Discrete Latent Representations With Differentiable Approximation
    Bridges", 2019, arXiv:1905.03658.
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016, arXiv:1509.00519.
"""

import math

import keras
from keras import ops

import dab_keras as dk
from dab_keras import _validation
from dab_keras import estimators as dab_estimators
from dab_keras import ops as dab_ops
from dab_keras.zoo import vae_math
from dab_keras.zoo import weights as zoo_weights

LATENTS = ("categorical", "binary")
#: Number of pixels of an MNIST image.
PIXELS = 28 * 28
#: Arguments of models saved before τ was annealed by a callback, ignored when they load.
_LEGACY_CONFIG = ("min_temperature", "anneal_steps")


def _as_tuple(units):
    return (units,) if isinstance(units, int) else tuple(units)


def _estimator(estimator, latent, temperature, approximator_units, categories, residual=False,
               sample_gradient="relaxation"):
    """The estimator object of the sampling layer: names get the zoo's settings, objects pass through."""
    if not isinstance(estimator, str):
        return dab_estimators.get(estimator)
    key = zoo_weights.estimator_key(estimator)
    if key == "relaxed":
        return dab_estimators.Relaxed(temperature=temperature)
    # The latents are samples (logits plus noise): the straight-through base is the relaxation for both
    # kinds (straight-through Gumbel-Softmax / binary Concrete), not `Sign`'s identity, whose gradient
    # ignores that a sample flips only near zero (trained with it, the binary encoder turns deterministic);
    # or ReinMax's gradient, which reads the sample's logits.
    if key == "straight_through":
        return dab_estimators.StraightThrough(surrogate=sample_gradient, temperature=temperature)
    if latent == "categorical":
        # A small dense MLP over the K categories of each group (shared by the groups).
        approximator = dk.layers.AxisMLP((categories,), units=approximator_units, name="approximator")
    else:
        approximator = dk.layers.ElementwiseMLP(units=approximator_units, name="approximator")
    # `"auto"` is already the relaxation for `ArgMax` (and keeps the state tag of the shipped residual
    # weights); bits need it named, as for straight-through.
    surrogate = "relaxation" if residual and latent == "binary" else "auto"
    if sample_gradient == "reinmax":
        surrogate = "reinmax"
    return dab_estimators.DAB(approximator=approximator, residual=residual, temperature=temperature,
                              surrogate=surrogate)


@keras.saving.register_keras_serializable(package="dab_keras.zoo", name="DiscreteVAE")
class DiscreteVAEModel(keras.Model):
    """The discrete-latent VAE built by `DiscreteVAE` (see the module docstring for the math).

    `call(x)` returns a dict: `"logits"` (Bernoulli logits of the reconstruction, `(B, 28, 28, 1)`) and
    `"posterior_logits"` (`(B, G, K)` or `(B, D)`). `fit(x)` (no targets; `fit(x, x)` works too) minimizes
    the mean single-sample negative ELBO plus the estimator's losses; `evaluate` reports it as `neg_elbo`
    (with hard samples; in training with `"relaxed"` the tracker shows the relaxed objective).

    Use `DiscreteVAE` to build one (it also loads weights). τ of the relaxation stays where it is set:
    anneal it with `dab_keras.callbacks.TemperatureSchedule` (the recipe's: `vae.temperature_annealing`).

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
        seed: Seed of the latent noise generator. Defaults to `None` (Keras's global seed).
        dab_residual: With `estimator="dab"`: `True` builds the residual DAB (the approximator corrects
            the op's straight-through surrogate and starts at zero, so training starts as
            straight-through), `False` the paper's DAB (the approximator alone). Defaults to `False`
            (also for configs saved before it existed).
        sample_gradient: The base gradient of `"straight_through"` and of the residual DAB (given by
            name): `"relaxation"` (straight-through Gumbel-Softmax / binary Concrete) or `"reinmax"`
            (ReinMax's, `surrogate="reinmax"`; the sampler reads the logits). Defaults to
            `"relaxation"` (also for configs saved before it existed).
        decoder_codes: The codes the decoder's weights are fitted to in training: `"auto"` (the
            sampling layer's training output, through which the encoder also learns: relaxed for
            `"relaxed"`, hard otherwise), `"hard"` (the hard sample) or `"relaxed"` (the relaxed sample
            at the layer's current τ; needs a sampling layer with a temperature: `"relaxed"`,
            `"straight_through"` or the residual DAB). With `"hard"` or `"relaxed"` one draw of the
            noise gives two codes: the sampling layer's output, decoded with the decoder's weights held
            fixed, trains the encoder (and a DAB approximator) through the estimator; the chosen code,
            held fixed, trains the decoder. The loss reported is the first code's bound. Evaluation
            always decodes hard codes. Defaults to `"auto"` (also for configs saved before it existed).
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

        Straight-through on the hard sample for the encoder, a decoder fitted to relaxed codes:

        >>> model = DiscreteVAEModel(estimator="straight_through", decoder_codes="relaxed", hidden_units=(32,))
        >>> model.build()
        >>> sorted(model(np.zeros((2, 28, 28, 1), "float32"), training=True))
        ['decoder_logits', 'logits', 'posterior_logits']
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
        seed=None,
        dab_residual=False,
        sample_gradient="relaxation",
        decoder_codes="auto",
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
        self.seed = seed
        self.dab_residual = zoo_weights.check_dab_residual(dab_residual, estimator)
        self.sample_gradient = zoo_weights.check_sample_gradient(sample_gradient, estimator, self.dab_residual)
        self.decoder_codes = zoo_weights.check_decoder_codes(decoder_codes, estimator, self.dab_residual)
        self._estimator_arg = (
            estimator if isinstance(estimator, str) else dab_estimators.serialize(dab_estimators.get(estimator))
        )
        est = _estimator(
            estimator, self.latent, self.temperature, self.approximator_units, self.categories, self.dab_residual,
            self.sample_gradient,
        )

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
        if self.decoder_codes == "relaxed" and self.sampler.temperature is None:  # an `Estimator` object's state
            raise zoo_weights._relaxed_codes_error(self._estimator_arg, self.dab_residual)

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

        Gumbel: `dab_keras.ops.gumbel_noise`, −log(−log U); logistic: log U − log(1 − U) with U uniform
        in [1e-7, 1 − 1e-7].

        Args:
            shape: Shape of the noise (the logits').
            seed: An int, a `keras.random.SeedGenerator`, or `None` (the model's own generator).
                Defaults to `None`.

        Returns:
            float32 noise of `shape`.
        """
        seed = self.noise if seed is None else seed
        if self.latent == "categorical":
            return dab_ops.gumbel_noise(shape, seed=seed)
        u = keras.random.uniform(shape, minval=1e-7, maxval=1.0 - 1e-7, seed=seed)
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
        # The sampling layer adds the noise itself, so an estimator can read the logits (ReinMax needs them).
        return self.sampler(logits, training=training, noise=self.latent_noise(ops.shape(logits), seed))

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
            float32 `(B,)` in nats (`vae_math.categorical_kl_to_uniform` or `bernoulli_kl_to_uniform`).
        """
        if self.latent == "categorical":
            return vae_math.categorical_kl_to_uniform(logits)
        return vae_math.bernoulli_kl_to_uniform(logits)

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

    def decode_fixed(self, z):
        """`decode(z)` with the decoder's weights held fixed (read through `stop_gradient`): gradients reach `z` only.

        Args:
            z: Codes, as for `decode`.

        Returns:
            `decode(z)`'s `(B, 28, 28, 1)` pixel logits.
        """
        weights = [*self.decoder_layers, self.likelihood]
        fixed = [(v, ops.stop_gradient(v.value)) for layer in weights for v in layer.weights]
        with keras.StatelessScope(state_mapping=fixed):
            return self.decode(z)

    # ------------------------------------------------------------------ public API
    def call(self, inputs, training=None):
        logits = self.posterior_logits(inputs)
        if not training or self.decoder_codes == "auto":
            z = self.draw(logits, training=training)
            return {"logits": self.decode(z), "posterior_logits": logits}
        noise = self.latent_noise(ops.shape(logits))
        z_encoder = self.sampler(logits, training=True, noise=noise)
        # The op's own functions on the same perturbed logits: the layer is called once, so that its
        # losses (DAB's) stay those of the training call.
        if self.decoder_codes == "hard":
            z_decoder = self.sampler.hard(logits + noise)
        else:
            z_decoder = self.sampler.relax(logits + noise, self.sampler.temperature)
        return {
            "logits": self.decode_fixed(z_encoder),
            "decoder_logits": self.decode(ops.stop_gradient(z_decoder)),
            "posterior_logits": logits,
        }

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
        return vae_math.bernoulli_neg_log_likelihood(x, self.decode(z)) + self.kl(logits)

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
            lw = -vae_math.bernoulli_neg_log_likelihood(xs, self.decode(z)) + self.log_prior() - self.log_q(rep, z)
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
        per_example = vae_math.bernoulli_neg_log_likelihood(target, y_pred["logits"]) + self.kl(y_pred["posterior_logits"])
        self.neg_elbo_tracker.update_state(per_example, sample_weight=sample_weight)

        def batch_mean(values):
            if sample_weight is None:
                return ops.mean(values)
            w = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            return ops.sum(values * w) / ops.maximum(ops.sum(w), 1e-12)

        loss = batch_mean(per_example)
        for extra in self.losses:  # the estimator's losses (DAB), added by the layers in training
            loss = loss + ops.cast(extra, "float32")
        if "decoder_logits" in y_pred:  # `decoder_codes`: the decoder's own code adds its gradient, not its value
            decoder_nll = batch_mean(vae_math.bernoulli_neg_log_likelihood(target, y_pred["decoder_logits"]))
            loss = loss + (decoder_nll - ops.stop_gradient(decoder_nll))
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
            "seed": self.seed,
            "dab_residual": self.dab_residual,
            "sample_gradient": self.sample_gradient,
            "decoder_codes": self.decoder_codes,
        }

    @classmethod
    def from_config(cls, config):
        # Models saved before τ was annealed by a callback have the in-model schedule's arguments.
        config = {k: v for k, v in config.items() if k not in _LEGACY_CONFIG}
        return cls(**config)

    def load_own_variables(self, store):
        # Weight files written before τ was annealed by a callback hold the in-model schedule's step
        # counter as the model's own (only) variable; the model has none now, so it is skipped.
        if not self._trainable_variables + self._non_trainable_variables and list(store.keys()) == ["0"]:
            return
        super().load_own_variables(store)
