"""The decoder-codes experiment on the zoo VAE (`benchmarks/study/vae_factorial.py`).

Its claim is a split of the gradient: the encoder (and a DAB approximator) learns as under the encoder's
estimator, the decoder as under an estimator whose forward gives the decoder's kind of code. Each cell's
weight gradients are compared with those of plain `DiscreteVAEModel`s holding the same weights and noise.
"""

import json
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.study import vae_factorial as vf  # noqa: E402
from dab_keras.zoo.vae_model import DiscreteVAEModel  # noqa: E402

ENCODER = ("encoder", "posterior", "sample")  # variable paths whose gradient comes from the encoder's code


def _model(cls, **kwargs):
    keras.utils.set_random_seed(0)
    model = cls(groups=3, categories=4, hidden_units=(8,), seed=3, **kwargs)
    model.build()
    return model


def _images(n=6, seed=0):
    return (np.random.default_rng(seed).random((n, 28, 28, 1)) < 0.3).astype("float32")


def _loss_and_gradients(model, x):
    """The training loss and its gradient for each trainable variable (keyed by path below the model)."""
    backend = keras.backend.backend()
    names = [v.path.split("/", 1)[1] for v in model.trainable_variables]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y_pred=model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
    elif backend == "jax":
        import jax

        model.compile(optimizer="adam")  # JAX's training loss reads the optimizer (loss scaling)

        def objective(trainable):
            loss, _ = model.compute_loss_and_updates(
                trainable, [v.value for v in model.non_trainable_variables],
                [v.value for v in model.metrics_variables], x, None, None, training=True,
                optimizer_variables=[v.value for v in model.optimizer.variables])
            return loss

        loss, grads = jax.value_and_grad(objective)([v.value for v in model.trainable_variables])
    else:
        pytest.skip("the experiment runs on TensorFlow or JAX")
    grads = [np.zeros(v.shape) if g is None else np.asarray(keras.ops.convert_to_numpy(g)) for v, g in
             zip(model.trainable_variables, grads)]
    return float(keras.ops.convert_to_numpy(loss)), dict(zip(names, grads))


def _copy(cls, source, **kwargs):
    """A model of `cls` holding `source`'s values of the variables both have (matched by path)."""
    model = _model(cls, **kwargs)
    values = {v.path.split("/", 1)[1]: v for v in source.weights}
    for variable in model.weights:
        variable.assign(values[variable.path.split("/", 1)[1]])
    return model


@pytest.mark.parametrize("kwargs", [
    {"estimator": "straight_through", "sample_gradient": "reinmax", "decoder_codes": "hard"},
    {"estimator": "straight_through", "decoder_codes": "hard"},
    {"estimator": "relaxed", "decoder_codes": "relaxed"},
    {"estimator": "dab", "dab_residual": True, "decoder_codes": "hard"},
])
def test_matching_codes_give_the_plain_models_loss_and_gradients(kwargs):
    factorial = _model(vf.FactorialVAEModel, **kwargs)
    plain = _copy(DiscreteVAEModel, factorial, **{k: v for k, v in kwargs.items() if k != "decoder_codes"})
    x = _images()
    loss, grads = _loss_and_gradients(factorial, x)
    plain_loss, plain_grads = _loss_and_gradients(plain, x)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], plain_grads[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert any(np.abs(g).max() > 0 for name, g in grads.items() if name.startswith("decoder"))


@pytest.mark.parametrize("encoder, decoder", [
    ({"estimator": "straight_through", "sample_gradient": "reinmax"}, {"estimator": "relaxed"}),
    ({"estimator": "relaxed"}, {"estimator": "straight_through"}),
    ({"estimator": "dab", "dab_residual": True, "sample_gradient": "reinmax"}, {"estimator": "relaxed"}),
])
def test_cross_cells_split_the_gradient_between_two_estimators(encoder, decoder):
    codes = "relaxed" if decoder["estimator"] == "relaxed" else "hard"
    factorial = _model(vf.FactorialVAEModel, decoder_codes=codes, **encoder)
    as_encoder = _copy(DiscreteVAEModel, factorial, **encoder)
    as_decoder = _copy(DiscreteVAEModel, factorial, **decoder)
    x = _images()
    loss, grads = _loss_and_gradients(factorial, x)
    encoder_loss, encoder_grads = _loss_and_gradients(as_encoder, x)
    _, decoder_grads = _loss_and_gradients(as_decoder, x)
    np.testing.assert_allclose(loss, encoder_loss, rtol=1e-6)  # the value is the encoder code's bound
    differs = 0.0
    for name, grad in grads.items():
        reference = encoder_grads[name] if name.startswith(ENCODER) else decoder_grads[name]
        np.testing.assert_allclose(grad, reference, rtol=1e-5, atol=1e-6, err_msg=name)
        if not name.startswith(ENCODER):
            differs = max(differs, np.abs(grad - encoder_grads[name]).max())
    assert differs > 1e-3  # the decoder's gradient is not the encoder estimator's


def test_outside_training_it_is_the_plain_model():
    factorial = _model(vf.FactorialVAEModel, estimator="straight_through", decoder_codes="relaxed")
    plain = _copy(DiscreteVAEModel, factorial, estimator="straight_through")
    x = _images()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(factorial(x)["logits"]),
                                  keras.ops.convert_to_numpy(plain(x)["logits"]))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(factorial.neg_elbo(x, seed=1)),
                                  keras.ops.convert_to_numpy(plain.neg_elbo(x, seed=1)))
    clone = vf.FactorialVAEModel.from_config(factorial.get_config())
    assert clone.decoder_codes == "relaxed"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="decoder_codes"):
        vf.FactorialVAEModel(decoder_codes="soft")
    with pytest.raises(ValueError, match="decoder_codes='relaxed'.*temperature"):
        _model(vf.FactorialVAEModel, estimator="dab", decoder_codes="relaxed")  # the paper's DAB has no τ


def test_command_trains_a_cell_with_the_zoo_recipe(tmp_path, capsys, monkeypatch):
    from benchmarks.study.__main__ import main
    from dab_keras.zoo import registry

    # The experiment registers its task in the zoo's registry: keep that out of the other tests' registry.
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))

    rng = np.random.default_rng(0)
    data = tmp_path / "mnist.npz"
    np.savez(data, x_train=rng.integers(0, 256, (200, 28, 28), dtype="uint8"), y_train=np.zeros(200),
             x_test=rng.integers(0, 256, (20, 28, 28), dtype="uint8"), y_test=np.zeros(20))
    out = tmp_path / "cell"
    argv = ["vae-factorial", "--estimator", "relaxed", "--decoder-codes", "hard", "--seed", "1",
            "--data", str(data), "--epochs", "2", "--out", str(out), "--checkpoint-every", "2"]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["test_images"] == 20 and np.isfinite(metrics["neg_elbo"])
    manifest = json.loads((out / f"{vf.TASK_NAME}-relaxed.json").read_text())
    assert manifest["config"]["decoder_codes"] == "hard" and manifest["seed"] == 1 and manifest["epochs"] == 2
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch-002.weights.h5"]
    assert manifest["command"].startswith("python -m benchmarks.study vae-factorial")
    model = vf.task().build("relaxed", weights=str(out / f"{vf.TASK_NAME}-relaxed.weights.h5"), decoder_codes="hard")
    assert model.decoder_codes == "hard"
    assert main([*argv, "--resume"]) == 0  # a finished run resumes without training
    assert vf.TASK_NAME in registry.list_models()
