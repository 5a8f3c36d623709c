"""The discrete VAEs' `decoder_codes`: which codes the decoder's weights are fitted to in training.

The claim is a split of the gradient: the encoder (and a DAB approximator) learns as under the model's
estimator, the decoder as under an estimator whose forward gives the chosen kind of code. Each model's
weight gradients are compared with those of `decoder_codes="auto"` models holding the same weights and
noise; then the option's checks, saving, weights and zoo runs.
"""

import json

import keras
import numpy as np
import pytest

from dab_keras import zoo
from dab_keras.zoo import training, vae
from dab_keras.zoo.vae_model import DiscreteVAEModel

ENCODER = ("encoder", "posterior", "sample")  # variable paths whose gradient comes from the encoder's code


def _model(latent="categorical", **kwargs):
    keras.utils.set_random_seed(0)
    model = DiscreteVAEModel(latent=latent, groups=3, categories=4, bits=5, hidden_units=(8,), seed=3, **kwargs)
    model.build()
    return model


def _images(n=6, seed=0):
    return (np.random.default_rng(seed).random((n, 28, 28, 1)) < 0.3).astype("float32")


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _loss_and_gradients(model, x, sample_weight=None):
    """The training loss and its gradient for each trainable variable (keyed by path below the model)."""
    backend = keras.backend.backend()
    names = [v.path.split("/", 1)[1] for v in model.trainable_variables]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y_pred=model(x, training=True), sample_weight=sample_weight)
        grads = tape.gradient(loss, model.trainable_variables)
    elif backend == "jax":
        import jax

        model.compile(optimizer="adam")  # JAX's training loss reads the optimizer (loss scaling)

        def objective(trainable):
            loss, _ = model.compute_loss_and_updates(
                trainable, [v.value for v in model.non_trainable_variables],
                [v.value for v in model.metrics_variables], x, None, sample_weight, training=True,
                optimizer_variables=[v.value for v in model.optimizer.variables])
            return loss

        loss, grads = jax.value_and_grad(objective)([v.value for v in model.trainable_variables])
    else:
        pytest.skip("gradients are compared on TensorFlow or JAX")
    grads = [np.zeros(v.shape) if g is None else _np(g) for v, g in zip(model.trainable_variables, grads)]
    return float(_np(loss)), dict(zip(names, grads))


def _copy(source, **kwargs):
    """A model holding `source`'s values of the variables both have (matched by path)."""
    model = _model(**kwargs)
    values = {v.path.split("/", 1)[1]: v for v in source.weights}
    for variable in model.weights:
        variable.assign(values[variable.path.split("/", 1)[1]])
    return model


@pytest.mark.parametrize("kwargs", [
    {"estimator": "straight_through", "sample_gradient": "reinmax", "decoder_codes": "hard"},
    {"estimator": "straight_through", "decoder_codes": "hard"},
    {"estimator": "relaxed", "decoder_codes": "relaxed"},
    {"estimator": "dab", "dab_residual": True, "decoder_codes": "hard"},
    {"latent": "binary", "estimator": "straight_through", "decoder_codes": "hard"},
    {"latent": "binary", "estimator": "relaxed", "decoder_codes": "relaxed"},
])
def test_the_codes_the_sampler_gives_reproduce_the_auto_models_loss_and_gradients(kwargs):
    model = _model(**kwargs)
    auto = _copy(model, **{k: v for k, v in kwargs.items() if k != "decoder_codes"})
    assert auto.decoder_codes == "auto"
    x = _images()
    loss, grads = _loss_and_gradients(model, x)
    auto_loss, auto_grads = _loss_and_gradients(auto, x)
    np.testing.assert_allclose(loss, auto_loss, rtol=1e-6)
    assert grads.keys() == auto_grads.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], auto_grads[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert any(np.abs(g).max() > 0 for name, g in grads.items() if name.startswith("decoder"))


@pytest.mark.parametrize("encoder, decoder", [
    ({"estimator": "straight_through", "sample_gradient": "reinmax"}, {"estimator": "relaxed"}),
    ({"estimator": "relaxed"}, {"estimator": "straight_through"}),
    ({"estimator": "dab", "dab_residual": True, "sample_gradient": "reinmax"}, {"estimator": "relaxed"}),
    ({"latent": "binary", "estimator": "straight_through"}, {"latent": "binary", "estimator": "relaxed"}),
])
def test_other_codes_split_the_gradient_between_two_estimators(encoder, decoder):
    codes = "relaxed" if decoder["estimator"] == "relaxed" else "hard"
    model = _model(decoder_codes=codes, **encoder)
    as_encoder = _copy(model, **encoder)
    as_decoder = _copy(model, **decoder)
    x = _images()
    loss, grads = _loss_and_gradients(model, x)
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


def test_sample_weights_weigh_the_decoders_code_as_they_weigh_the_bound():
    model = _model(estimator="straight_through", decoder_codes="relaxed")
    as_decoder = _copy(model, estimator="relaxed")  # decodes the same relaxed codes, with its own weights
    x = _images()
    weights = np.array([1.0, 0.0, 2.0, 0.0, 1.0, 3.0], "float32")
    _, grads = _loss_and_gradients(model, x, weights)
    _, reference = _loss_and_gradients(as_decoder, x, weights)
    _, unweighted = _loss_and_gradients(as_decoder, x)
    for name in grads:
        if not name.startswith(ENCODER):
            np.testing.assert_allclose(grads[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.abs(reference["likelihood_logits/kernel"] - unweighted["likelihood_logits/kernel"]).max() > 1e-4


def test_outside_training_the_model_decodes_hard_codes_as_auto():
    model = _model(estimator="straight_through", decoder_codes="relaxed")
    auto = _copy(model, estimator="straight_through")
    x = _images()
    np.testing.assert_array_equal(_np(model(x)["logits"]), _np(auto(x)["logits"]))
    np.testing.assert_array_equal(_np(model.neg_elbo(x, seed=1)), _np(auto.neg_elbo(x, seed=1)))
    assert sorted(model(x)) == ["logits", "posterior_logits"]


def test_the_option_round_trips_through_keras_files(tmp_path):
    model = vae.DiscreteVAE(estimator="straight_through", sample_gradient="reinmax", decoder_codes="relaxed",
                            weights=None, groups=3, categories=4, hidden_units=(16,))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(_images(8), epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "vae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.decoder_codes == "relaxed" and loaded.get_config()["decoder_codes"] == "relaxed"
    np.testing.assert_allclose(_np(loaded.encode(_images(2))), _np(model.encode(_images(2))), rtol=1e-6)
    # configs saved before the option existed load as "auto"
    config = {k: v for k, v in model.get_config().items() if k != "decoder_codes"}
    assert DiscreteVAEModel.from_config(config).decoder_codes == "auto"


def test_bad_values_are_named():
    with pytest.raises(ValueError, match=r"`decoder_codes` must be one of .*Received: decoder_codes='soft'"):
        DiscreteVAEModel(decoder_codes="soft")
    with pytest.raises(ValueError, match=r"`decoder_codes='relaxed'` needs a sampling layer with a temperature"):
        DiscreteVAEModel(estimator="dab", decoder_codes="relaxed")  # the paper's DAB has no τ
    from dab_keras import estimators

    paper_dab = estimators.DAB(residual=False)  # an object: checked when the layer is built
    with pytest.raises(ValueError, match=r"`decoder_codes='relaxed'` needs a sampling layer with a temperature"):
        _model(latent="binary", estimator=paper_dab, decoder_codes="relaxed")
    assert _model(estimator="dab", decoder_codes="hard").decoder_codes == "hard"


def test_weights_load_only_into_a_model_of_the_same_choice_within_an_estimator(tmp_path):
    shipped = zoo.weights.WEIGHTS_DIR / "discrete_vae-dab_residual_reinmax.weights.h5"
    with pytest.raises(ValueError, match=r"decoder_codes='relaxed' \(weights: 'auto'\)"):
        vae.DiscreteVAE(estimator="dab", dab_residual=True, sample_gradient="reinmax", decoder_codes="relaxed",
                        weights=str(shipped))
    # another estimator's weights are a starting point: the network loads, the training choice is free
    model = vae.DiscreteVAE(estimator="straight_through", sample_gradient="reinmax", decoder_codes="relaxed",
                            weights="dab_residual_reinmax")
    assert model.decoder_codes == "relaxed"


@pytest.mark.parametrize("kwargs, key", [
    ({"estimator": "relaxed", "decoder_codes": "relaxed"}, "relaxed"),
    ({"estimator": "dab", "dab_residual": True, "sample_gradient": "reinmax", "decoder_codes": "hard"},
     "dab_residual_reinmax"),
])
def test_the_samplers_own_codes_load_the_weights_of_auto_and_train_as_its_run(kwargs, key):
    model = vae.DiscreteVAE(weights="pretrained", **kwargs)
    assert model.decoder_codes == kwargs["decoder_codes"]  # the model keeps the choice it was given
    shipped = vae.DiscreteVAE(weights=key, **{k: v for k, v in kwargs.items() if k != "decoder_codes"})
    for ours, theirs in zip(model.weights, shipped.weights):
        np.testing.assert_array_equal(_np(ours), _np(theirs))
    checked = training.check_arguments(zoo.registry.get("discrete_vae"), estimator=kwargs["estimator"],
                                       config={k: v for k, v in kwargs.items() if k != "estimator"})
    assert "decoder_codes" not in checked["config"]  # the run and its folder are those of "auto"
    other = "hard" if kwargs["decoder_codes"] == "relaxed" else "relaxed"
    with pytest.raises(ValueError, match=rf"decoder_codes='{other}' \(weights: 'auto'\)"):
        vae.DiscreteVAE(weights="pretrained", **{**kwargs, "decoder_codes": other})


def test_train_checks_names_and_records_the_option(tmp_path):
    with pytest.raises(ValueError, match=r"`decoder_codes` applies to the discrete VAEs only. Received: model 'sorter'"):
        zoo.train("sorter", samples=2048, config={"decoder_codes": "relaxed"}, output_dir=tmp_path / "s")
    with pytest.raises(ValueError, match=r"`decoder_codes='relaxed'` needs a sampling layer.*estimator='dab'"):
        zoo.train("discrete_vae", estimator="dab", epochs=1, config={"decoder_codes": "relaxed"},
                  output_dir=tmp_path / "v")
    assert not (tmp_path / "s").exists() and not (tmp_path / "v").exists()
    task = zoo.registry.get("discrete_vae")
    checked = training.check_arguments(task, estimator="straight_through",
                                       config={"sample_gradient": "reinmax", "decoder_codes": "relaxed"})
    assert checked["config"] == {"sample_gradient": "reinmax", "decoder_codes": "relaxed"}
    # its own default run folder: never the one of the same estimator with the sampler's codes
    assert training._run_name("straight_through", checked["config"]) == "straight_through_reinmax_relaxed_codes"
    default = training.check_arguments(task, estimator="relaxed", config={"decoder_codes": "auto"})
    assert default["config"] == {}  # the default is the same run as without it


def test_a_zoo_run_trains_the_decoder_on_the_chosen_codes_and_resumes(tmp_path, fake_mnist):
    data = fake_mnist(200, 20)
    config = {"decoder_codes": "hard", "groups": 3, "categories": 4, "hidden_units": [16]}
    out = tmp_path / "run"
    run = zoo.train("discrete_vae", estimator="relaxed", epochs=2, data=str(data), seed=1, config=config,
                    output_dir=out)
    manifest = json.loads(run["manifest"].read_text())
    assert manifest["config"]["decoder_codes"] == "hard" and "--decoder-codes hard" in manifest["command"]
    assert run["model"].decoder_codes == "hard" and np.isfinite(run["metrics"]["neg_elbo"])
    # the weights and their manifest rebuild the model with the option, for evaluation too
    assert np.isfinite(zoo.evaluate("discrete_vae", weights=str(run["weights"]), estimator="relaxed",
                                    data=str(data))["neg_elbo"])
    again = zoo.train("discrete_vae", estimator="relaxed", epochs=2, data=str(data), seed=1, config=config,
                      output_dir=out, resume=True)
    assert again["complete"]


def test_the_command_line_offers_the_models_choices():
    from dab_keras.zoo import cli

    # the CLI names them itself, before a backend is imported
    assert cli._DECODER_CODES == zoo.weights.DECODER_CODES
