r"""`DiscreteVAE`: a variational autoencoder with a hard discrete latent code on binarized MNIST.

The family's entry point: the constructor `DiscreteVAE` (builds the model, loads the shipped weights),
the recipe's annealing of the relaxation's temperature (`temperature_annealing`, a
`dab_keras.callbacks.TemperatureSchedule`) and the training recipe `VAETask`, registered as
`discrete_vae` (30 × 10 categorical latent) and `binary_vae` (200 bits). The rest of the family, by job:

- `dab_keras.zoo.vae_model`: `DiscreteVAEModel`, the Keras model (encoder, hard latent sample,
  decoder, the bounds `neg_elbo` and `neg_iwae`, the training loss); its docstring has the math;
- `dab_keras.zoo.vae_math`: the terms of the bounds (Bernoulli reconstruction loss, KL to the prior);
- `dab_keras.zoo.binarized_mnist`: the training batches (`DynamicallyBinarizedMNIST`) and the fixed
  binary test sets;
- `dab_keras.zoo.vae_evaluation`: the evaluation protocol (`evaluate_bounds`, `mean_bound`, seeds).

Imports flow one way: `vae_math` → `vae_model` → this module ← `vae_evaluation` ← `binarized_mnist`. The
public names of those modules are re-exported here (`dab_keras.zoo.vae.mean_bound`, ...).
"""

import functools

from dab_keras import _validation
from dab_keras import callbacks as dab_callbacks
from dab_keras.zoo import binarized_mnist, vae_evaluation, vae_model
from dab_keras.zoo import data as zoo_data
from dab_keras.zoo import task as zoo_task
from dab_keras.zoo import weights as zoo_weights
from dab_keras.zoo.binarized_mnist import TEST_SEED, DynamicallyBinarizedMNIST, binarized_test_sets
from dab_keras.zoo.vae_evaluation import EVAL_BATCH, EVAL_SEED, evaluate_bounds, mean_bound
from dab_keras.zoo.vae_math import (
    bernoulli_kl_to_uniform,
    bernoulli_neg_log_likelihood,
    categorical_kl_to_uniform,
)
from dab_keras.zoo.vae_model import LATENTS, PIXELS, DiscreteVAEModel

__all__ = [
    "DEFAULT_ESTIMATORS",
    "EVAL_BATCH",
    "EVAL_SEED",
    "LATENTS",
    "MIN_TEMPERATURE",
    "PIXELS",
    "TEST_SEED",
    "DiscreteVAE",
    "DiscreteVAEModel",
    "DynamicallyBinarizedMNIST",
    "VAETask",
    "bernoulli_kl_to_uniform",
    "bernoulli_neg_log_likelihood",
    "binarized_test_sets",
    "categorical_kl_to_uniform",
    "evaluate_bounds",
    "mean_bound",
    "temperature_annealing",
]

#: The estimator whose weights ship, per latent: what `DiscreteVAE()` and `dab-zoo train` use by default.
DEFAULT_ESTIMATORS = {"categorical": "relaxed", "binary": "dab"}
#: τ at the end of the recipe's annealing (from the model's `temperature`, 1.0).
MIN_TEMPERATURE = 0.3
_MODEL_NAMES = {"categorical": "discrete_vae", "binary": "binary_vae"}


def temperature_annealing(total_steps, temperature=1.0, min_temperature=MIN_TEMPERATURE):
    r"""The recipe's annealing of τ: a `TemperatureSchedule` decaying it exponentially over a run.

    $$ \tau(t) = \tau_0 \, (\tau_{\min} / \tau_0)^{\min(t / T,\ 1)}, $$

    t the optimizer step (`optimizer.iterations`) and T = `total_steps`: τ₀ at the first step, τ_min from
    step T on (Jang et al. anneal the Gumbel-Softmax this way). The callback sets τ before each compiled
    call (`update_freq="batch"`): every step, or every s steps with `steps_per_execution=s`, so τ lags
    the per-step schedule by less than s steps (with the recipe's s = 10 and T = 36,000, by a factor of
    at least 0.3^(10/36000) ≈ 0.9997). It anneals every `dab_keras` layer of the model that has a
    temperature (the sampling layer of `"relaxed"` and `"straight_through"`; none with `"dab"`).

    Args:
        total_steps: Length T >= 1 of the decay in optimizer steps (the run's, for the recipe).
        temperature: τ₀ > 0, the model's `temperature`. Defaults to `1.0`.
        min_temperature: τ_min > 0. Defaults to `MIN_TEMPERATURE` (0.3).

    Returns:
        A `dab_keras.callbacks.TemperatureSchedule` for `fit(callbacks=...)`.

    Raises:
        ValueError: if `total_steps` is not an integer >= 1 or a temperature not a finite number > 0.

    Examples:
        >>> callback = temperature_annealing(4, min_temperature=0.25)
        >>> [round(callback.schedule(t), 6) for t in (0, 2, 4, 9)], callback.update_freq
        ([1.0, 0.5, 0.25, 0.25], 'batch')

    References:
        Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017, arXiv:1611.01144.
    """
    total_steps = _validation.check_int("total_steps", total_steps, 1)
    temperature = _validation.check_positive_float("temperature", temperature)
    min_temperature = _validation.check_positive_float("min_temperature", min_temperature)
    ratio = min_temperature / temperature

    def schedule(step):
        return temperature * ratio ** min(step / total_steps, 1.0)

    return dab_callbacks.TemperatureSchedule(schedule, update_freq="batch")


def DiscreteVAE(
    latent="categorical",
    estimator=None,
    groups=30,
    categories=10,
    bits=200,
    hidden_units=(512, 256),
    approximator_units=(64,),
    temperature=1.0,
    weights="pretrained",
    name=None,
    dab_residual=False,
    sample_gradient="relaxation",
    decoder_codes="auto",
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
        dab_residual: With `estimator="dab"`: `True` builds the residual DAB (the approximator corrects
            the op's straight-through surrogate and starts at zero, so training starts as
            straight-through), `False` the paper's DAB (the approximator alone). The categorical VAE
            ships both kinds of DAB weights (`weights="pretrained"` loads the kind chosen here), the binary
            VAE the paper's only; weights load only into a model of the same choice. Defaults to `False`.
        sample_gradient: The base gradient of `"straight_through"` and of the residual DAB:
            `"relaxation"` (straight-through Gumbel-Softmax / binary Concrete, as the shipped weights) or
            `"reinmax"` (ReinMax's second-order gradient, Liu et al. 2023: `StraightThrough(surrogate=
            "reinmax")`, `DAB(surrogate="reinmax")`). Weights load only into a model of the same choice.
            Defaults to `"relaxation"`.
        decoder_codes: The codes the decoder is fitted to in training: `"auto"` (the sampling layer's
            training output: relaxed for `"relaxed"`, hard otherwise, as the shipped weights), `"hard"`
            or `"relaxed"` (the relaxed sample at τ, whatever the estimator; the encoder still learns
            through the estimator: `DiscreteVAEModel`). It changes training only; weights load only into
            a model of the same choice, where the sampler's own codes (`"relaxed"` with `"relaxed"`,
            `"hard"` otherwise) count as `"auto"`, which trains the same. Defaults to `"auto"`.
        temperature: τ of the relaxation of `"relaxed"` and `"straight_through"`, where annealing
            starts (`fit(..., callbacks=[temperature_annealing(total_steps)])` anneals it to 0.3 as the
            recipe does; without a callback τ stays fixed). Defaults to `1.0`.
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
    latent = _validation.check_one_of("latent", latent, vae_model.LATENTS)
    if estimator is None:
        estimator = DEFAULT_ESTIMATORS[latent]
    key = zoo_weights.estimator_key(estimator)
    model_name = _MODEL_NAMES[latent]
    model = vae_model.DiscreteVAEModel(
        latent=latent,
        estimator=estimator,
        groups=groups,
        categories=categories,
        bits=bits,
        hidden_units=hidden_units,
        approximator_units=approximator_units,
        temperature=temperature,
        dab_residual=dab_residual,
        sample_gradient=sample_gradient,
        decoder_codes=decoder_codes,
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
        if model.dab_residual:  # left out when False, as in the manifests of the paper's DAB
            config["dab_residual"] = True
    elif key in ("relaxed", "straight_through"):
        config["temperature"] = model.temperature
    options = {"sample_gradient": model.sample_gradient,
               # the sampler's own codes train as "auto" does: its weights load
               "decoder_codes": zoo_weights.canonical_decoder_codes(model.decoder_codes, estimator)}
    for option, value in options.items():  # left out at their defaults, as in older manifests
        if value != zoo_weights.CONFIG_DEFAULTS[option]:
            config[option] = value
    zoo_weights.load(model, weights, model_name, key, config)
    return model


class VAETask(zoo_task.Task):
    """Training recipe of the discrete VAE: dynamically binarized MNIST, Adam with cosine decay.

    Recipe: batch 100, Adam at 3e-3 with cosine decay to zero (no warm-up), 60 epochs (36,000 steps,
    3.6 M images), 10 steps per compiled call; τ of `"relaxed"` / `"straight_through"` decays from 1.0 to
    `min_temperature` (0.3) over the run (`callbacks`: `temperature_annealing`). About 15 minutes on two
    CPU cores (TensorFlow).

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
    #: 60 epochs of 600 batches (36,000 steps).
    epochs = 60
    steps_per_execution = 10
    #: τ at the end of the run, annealed from the model's `temperature` (see `callbacks`).
    min_temperature = MIN_TEMPERATURE
    #: Samples of the importance-weighted bound in evaluation (`0` skips it) and images it runs on.
    iwae_k = 100
    iwae_images = 10_000

    def __init__(self, latent="categorical"):
        self.latent = _validation.check_one_of("latent", latent, vae_model.LATENTS)
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

    def callbacks(self, model, total_steps):
        """`temperature_annealing` over the run when the model's sampling layer has a temperature.

        Args:
            model: A `DiscreteVAEModel`.
            total_steps: Optimizer steps of the run: τ reaches `min_temperature` at its end.

        Returns:
            `[temperature_annealing(...)]` for `"relaxed"`, `"straight_through"` and the residual DAB, `[]`
            for the paper's DAB (no temperature).
        """
        if getattr(model.sampler, "temperature", None) is None:
            return []
        return [temperature_annealing(total_steps, model.temperature, self.min_temperature)]

    def train_data(self, batch_size, seed, data="tfds", initial_epoch=0):
        images = zoo_data.load_mnist(data)["x_train"]
        x = binarized_mnist.DynamicallyBinarizedMNIST(images, batch_size, seed=seed, initial_epoch=initial_epoch)
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
        """Test bounds in nats per image (lower is better): `vae_evaluation.evaluate_bounds`.

        - `neg_elbo`: mean single-sample negative ELBO on the 10,000 test images binarized dynamically
          once (seed `TEST_SEED`), the latent noise from `keras.random.SeedGenerator(EVAL_SEED)` in
          batches of `batch_size` (default `EVAL_BATCH`).
        - `neg_elbo_threshold`: the same on the test set binarized at 0.5.
        - `neg_iwae_k<k>`: the importance-weighted bound of `iwae_k` samples on the first `iwae_images`
          dynamically binarized test images (batches of `batch_size // 10`).

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
        return vae_evaluation.evaluate_bounds(
            model,
            data=data,
            batch_size=batch_size,
            iwae_k=self.iwae_k if iwae_k is None else iwae_k,
            iwae_images=self.iwae_images if iwae_images is None else iwae_images,
        )

