r"""Which half of the Gumbel-Softmax's lead on the zoo VAE comes from the codes its decoder trains on?

The Gumbel-Softmax (`"relaxed"`) trains the zoo's categorical VAE on relaxed codes: one relaxed sample
$\tilde z = \mathrm{softmax}((\ell + G)/\tau)$ is decoded, and the same decoded value gives both the
decoder's gradient (its parameters fitted to reconstruct from $\tilde z$) and the encoder's (through the
decoder's Jacobian at $\tilde z$). A hard-forward estimator (straight-through, ReinMax, DAB) decodes the
hard sample $z = \mathrm{one\_hot}(\arg\max(\ell + G))$ for both. Evaluated on hard codes, the
Gumbel-Softmax is ahead on the recipe (`benchmarks/RESULTS.md`). This experiment separates the two
halves. `FactorialVAEModel` decodes two codes from one draw of the noise:

- the **encoder's code**, the sampling layer's training output (its estimator: hard forward with a
  surrogate gradient, or the relaxed sample for `"relaxed"`), decoded with the decoder's weights held
  fixed (`stop_gradient`), so that only the encoder (and a DAB approximator) learns from it;
- the **decoder's code**, `decoder_codes="hard"` (the hard sample) or `"relaxed"` (the relaxed sample at
  the layer's current τ), held fixed (`stop_gradient`) and decoded with the decoder's own weights, so
  that only the decoder learns from it.

The loss is $-\log p(x \mid z_{\mathrm{enc}}) + \big[-\log p(x \mid z_{\mathrm{dec}})\big]_{\text{grad}} + \mathrm{KL}$,
where $[\cdot]_{\text{grad}}$ contributes its gradient but not its value ($u - \mathrm{stop\_gradient}(u)$),
so the reported loss is the encoder code's bound. With `decoder_codes` equal to the kind of code the
estimator's forward produces (hard for straight-through and DAB, relaxed for `"relaxed"`), the gradients
are those of the plain `DiscreteVAEModel`; the two cross cells are the experiment:

| | decoder trains on hard codes | decoder trains on relaxed codes |
|---|---|---|
| encoder: hard forward (straight-through on ReinMax) | the zoo's `straight_through` | **cross 1** |
| encoder: relaxed (Gumbel-Softmax) | **cross 2** | the zoo's `relaxed` |

Each cell trains with the zoo recipe (`dab_keras.zoo.train`: the same data order, initialization,
optimizer, τ annealing and test evaluation as the zoo's runs with the same seed), registered as the zoo
task `discrete_vae_factorial`; evaluation always decodes hard codes.

    python -m benchmarks.study vae-factorial --estimator straight_through --sample-gradient reinmax \
        --decoder-codes relaxed --seed 0 --data mnist.npz --out runs/cross1-s0 --resume
"""

import json

import keras
from keras import ops

from dab_keras import _validation
from dab_keras.zoo import registry, training, vae, vae_math, vae_model

#: The kinds of code the decoder can train on.
DECODER_CODES = ("hard", "relaxed")
#: Registry name of the experiment's zoo task.
TASK_NAME = "discrete_vae_factorial"


@keras.saving.register_keras_serializable(package="dab_keras.study", name="FactorialVAE")
class FactorialVAEModel(vae_model.DiscreteVAEModel):
    """A `DiscreteVAEModel` whose decoder trains on codes of its own kind (see the module docstring).

    Outside training it is the `DiscreteVAEModel` it extends (hard codes, the same weights).

    Args:
        decoder_codes: `"hard"` or `"relaxed"`: the codes the decoder's weights are fitted to. Defaults to
            `"relaxed"`.
        **kwargs: `DiscreteVAEModel` arguments. The sampling layer needs a temperature (not the paper's
            DAB) when `decoder_codes="relaxed"`.

    Raises:
        ValueError: for an unknown `decoder_codes`, or `"relaxed"` with a sampling layer that has no τ.
    """

    def __init__(self, decoder_codes="relaxed", **kwargs):
        super().__init__(**kwargs)
        self.decoder_codes = _validation.check_one_of("decoder_codes", decoder_codes, DECODER_CODES)

    def build(self, input_shape=(None, 28, 28, 1)):
        super().build(input_shape)
        if self.decoder_codes == "relaxed" and self.sampler.temperature is None:  # the estimator's state exists now
            raise ValueError(
                "`decoder_codes='relaxed'` needs a sampling layer with a temperature (relaxed, straight-through "
                f"or the residual DAB). Received: estimator={self._estimator_arg!r}"
            )

    def decode_fixed(self, z):
        """`decode(z)` with the decoder's weights held fixed (read through `stop_gradient`): gradients reach `z` only."""
        weights = [*self.decoder_layers, self.likelihood]
        fixed = [(v, ops.stop_gradient(v.value)) for layer in weights for v in layer.weights]
        with keras.StatelessScope(state_mapping=fixed):
            return self.decode(z)

    def call(self, inputs, training=None):
        if not training:
            return super().call(inputs, training=training)
        logits = self.posterior_logits(inputs)
        noise = self.latent_noise(ops.shape(logits))
        z_encoder = self.sampler(logits, training=True, noise=noise)
        # The op's own functions on the same perturbed logits (the layer is called once, so that its losses,
        # DAB's, stay those of the training call).
        if self.decoder_codes == "hard":
            z_decoder = self.sampler.hard(logits + noise)
        else:
            z_decoder = self.sampler.relax(logits + noise, self.sampler.temperature)
        return {
            "logits": self.decode_fixed(z_encoder),
            "decoder_logits": self.decode(ops.stop_gradient(z_decoder)),
            "posterior_logits": logits,
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if "decoder_logits" not in y_pred:
            return loss
        target = x if y is None else y
        decoder_nll = ops.mean(vae_math.bernoulli_neg_log_likelihood(target, y_pred["decoder_logits"]))
        return loss + decoder_nll - ops.stop_gradient(decoder_nll)

    def get_config(self):
        return {**super().get_config(), "decoder_codes": self.decoder_codes}


def FactorialDiscreteVAE(
    estimator="straight_through",
    decoder_codes="relaxed",
    groups=30,
    categories=10,
    hidden_units=(512, 256),
    approximator_units=(64,),
    temperature=1.0,
    weights=None,
    name=None,
    dab_residual=False,
    sample_gradient="relaxation",
):
    """Builds a categorical `FactorialVAEModel` (the zoo VAE's defaults), optionally loading `weights` (a path).

    Returns:
        A built, uncompiled `FactorialVAEModel`.
    """
    model = FactorialVAEModel(
        decoder_codes=decoder_codes, latent="categorical", estimator=estimator, groups=groups,
        categories=categories, hidden_units=hidden_units, approximator_units=approximator_units,
        temperature=temperature, dab_residual=dab_residual, sample_gradient=sample_gradient,
        name=name or TASK_NAME,
    )
    model.build((None, 28, 28, 1))
    if weights is not None:
        model.load_weights(weights)
    return model


class FactorialVAETask(vae.VAETask):
    """The zoo's categorical VAE recipe (`VAETask`) training a `FactorialVAEModel`."""

    def __init__(self):
        super().__init__("categorical")
        self.name = TASK_NAME
        self.constructor = FactorialDiscreteVAE
        self.description = "categorical VAE whose decoder trains on hard or relaxed codes (study)"

    def build(self, estimator, weights=None, **config):
        return FactorialDiscreteVAE(estimator=estimator, weights=weights, **config)


def task():
    """The registered `FactorialVAETask` (registered on first use)."""
    try:
        return registry.get(TASK_NAME)
    except ValueError:
        return registry.register(FactorialVAETask())


def train(estimator, decoder_codes, seed, data, output_dir, sample_gradient="relaxation", dab_residual=False,
          resume=False, epochs=None, verbose=0, command=None, checkpoint_every=None):
    """Trains one cell with the zoo recipe (`dab_keras.zoo.train` on `discrete_vae_factorial`).

    Args:
        estimator: `"relaxed"`, `"straight_through"` or `"dab"` (the encoder's gradient).
        decoder_codes: `"hard"` or `"relaxed"`.
        seed: Seed of initialization and data (the zoo run with this seed is the paired baseline).
        data: MNIST `.npz` path or `"tfds"`.
        output_dir: Run folder.
        sample_gradient: `"relaxation"` or `"reinmax"`. Defaults to `"relaxation"`.
        dab_residual: The residual DAB (with `estimator="dab"`). Defaults to `False`.
        resume: Continue the run in `output_dir`. Defaults to `False`.
        epochs: Epochs instead of the recipe's 60. Defaults to `None`.
        verbose: Keras `fit` verbosity. Defaults to `0`.
        command: The command line recorded in the manifest. Defaults to `None` (the zoo's).
        checkpoint_every: Keep the weights after every N-th epoch (`dab_keras.zoo.train`'s). Defaults to
            `None`.

    Returns:
        `dab_keras.zoo.train`'s dict (`metrics` holds the test bounds).
    """
    config = {"decoder_codes": _validation.check_one_of("decoder_codes", decoder_codes, DECODER_CODES)}
    if sample_gradient != "relaxation":
        config["sample_gradient"] = sample_gradient
    if dab_residual:
        config["dab_residual"] = True
    return training.train(
        task().name, estimator=estimator, seed=seed, data=data, output_dir=output_dir, resume=resume,
        epochs=epochs, config=config, command=command, verbose=verbose, checkpoint_every=checkpoint_every,
    )


def add_arguments(parser):
    """The `vae-factorial` command's arguments."""
    parser.add_argument("--estimator", required=True, choices=("relaxed", "straight_through", "dab"),
                        help="the encoder's estimator (its code's gradient)")
    parser.add_argument("--decoder-codes", required=True, choices=DECODER_CODES,
                        help="the codes the decoder's weights are fitted to")
    parser.add_argument("--sample-gradient", default="relaxation", choices=("relaxation", "reinmax"),
                        help="base gradient of straight-through and the residual DAB")
    parser.add_argument("--dab-residual", action="store_true", help="the residual DAB (with --estimator dab)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialization and data")
    parser.add_argument("--data", required=True, help="MNIST .npz in Keras's layout, or 'tfds'")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's 60")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                        help="keep the weights after every N-th epoch in OUT/checkpoints/")


def main(args, command):
    """Trains one cell and prints its test bounds as JSON."""
    try:
        run = train(args.estimator, args.decoder_codes, args.seed, args.data, args.out,
                    sample_gradient=args.sample_gradient, dab_residual=args.dab_residual, resume=args.resume,
                    epochs=args.epochs, command=command, checkpoint_every=args.checkpoint_every)
    except ValueError as error:
        print(error)
        return 2
    print(json.dumps(run["metrics"], sort_keys=True))
    return 0
