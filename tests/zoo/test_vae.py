"""The zoo's discrete VAE: shapes, the ELBO and IWAE against NumPy, dynamic binarization, annealing,
train/load, and the shipped weights."""

import csv
import math
import pathlib

import h5py
import keras
import numpy as np
import pytest
from keras import ops

from dab_keras import callbacks as dab_callbacks
from dab_keras import ops as dab_ops
from dab_keras import zoo
from dab_keras.zoo import vae

SMALL = {"groups": 3, "categories": 4, "bits": 5, "hidden_units": (16,), "approximator_units": (8,)}


def _small(latent="categorical", estimator="relaxed", **overrides):
    return vae.DiscreteVAE(latent=latent, estimator=estimator, weights=None, **{**SMALL, **overrides})


def _images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 28, 28, 1)) < 0.3).astype("float32")


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _fake_npz(path, n_train=40, n_test=12):
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, size=(n_train,), dtype=np.uint8),
        x_test=rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, size=(n_test,), dtype=np.uint8),
    )
    return path


@pytest.mark.parametrize("latent", ["categorical", "binary"])
def test_shapes_of_encode_decode_sample_and_bounds(latent):
    model = _small(latent)
    x = _images(5)
    probs = _np(model.encode(x))
    latent_shape = (3, 4) if latent == "categorical" else (5,)
    assert probs.shape == (5, *latent_shape)
    logits = _np(model.posterior_logits(x)).astype("float64")
    if latent == "categorical":
        expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    else:
        expected = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
    z = _np(model.prior_sample(7, seed=1))
    assert z.shape == (7, *latent_shape)
    if latent == "categorical":
        np.testing.assert_array_equal(z.sum(-1), 1.0)
    else:
        assert set(np.unique(z)) <= {-1.0, 1.0}
    assert _np(model.decode(z)).shape == (7, 28, 28, 1)
    images = _np(model.sample(6, seed=2))
    assert images.shape == (6, 28, 28, 1)
    decoded = _np(model.decode(model.prior_sample(6, seed=2))).astype("float64")
    np.testing.assert_allclose(images, 1.0 / (1.0 + np.exp(-decoded)), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(images, _np(model.sample(6, seed=2)))
    out = model(x)
    assert tuple(out["logits"].shape) == (5, 28, 28, 1)
    assert tuple(out["posterior_logits"].shape) == (5, *latent_shape)
    assert _np(model.neg_elbo(x)).shape == (5,) and _np(model.neg_iwae(x, k=3)).shape == (5,)


def _numpy_neg_elbo(model, x, seed):
    """The single-sample negative ELBO from the model's weights in NumPy, with the model's noise."""

    def dense(name, h, relu):
        layer = model.get_layer(name)
        h = h @ _np(layer.kernel) + _np(layer.bias)
        return np.maximum(h, 0.0) if relu else h

    h = x.reshape(len(x), -1)
    h = dense("encoder_0", h, True)
    logits = dense("posterior_logits", h, False).reshape(len(x), *model.latent_shape)
    noise = _np(model.latent_noise(logits.shape, seed=seed))
    if model.latent == "categorical":
        z = np.eye(model.categories, dtype="float32")[np.argmax(logits + noise, -1)]
        log_pi = logits - logits.max(-1, keepdims=True)
        log_pi = log_pi - np.log(np.exp(log_pi).sum(-1, keepdims=True))
        kl = (np.exp(log_pi) * log_pi).sum((-2, -1)) + model.groups * np.log(model.categories)
    else:
        z = np.where(logits + noise >= 0, 1.0, -1.0).astype("float32")
        q = 1.0 / (1.0 + np.exp(-logits))
        kl = (q * np.log(q) + (1 - q) * np.log(1 - q)).sum(-1) + model.bits * np.log(2.0)
    a = dense("likelihood_logits", dense("decoder_0", z.reshape(len(x), -1), True), False)
    rec = (np.logaddexp(0.0, a) - x.reshape(len(x), -1) * a).sum(-1)
    return rec + kl, z


@pytest.mark.parametrize("latent", ["categorical", "binary"])
def test_neg_elbo_matches_numpy_for_a_fixed_sample(latent):
    model = _small(latent)
    x = _images(6, seed=3)
    expected, z = _numpy_neg_elbo(model, x, seed=11)
    np.testing.assert_allclose(_np(model.neg_elbo(x, seed=11)), expected, rtol=1e-4, atol=1e-3)
    # The same seed gives the same hard sample; the sample is one-hot (or ±1).
    drawn = _np(model.draw(model.posterior_logits(x), seed=11))
    np.testing.assert_array_equal(drawn, z)
    # The loss of `fit`/`evaluate` is the same quantity.
    model.compile(optimizer="adam")
    out = model(x)
    loss = _np(model.compute_loss(x=x, y_pred=out, training=False))
    assert abs(loss - model.neg_elbo_tracker.result()) < 1e-3


def test_kl_is_zero_for_uniform_and_maximal_for_one_hot_posteriors():
    groups, categories, bits = 30, 10, 7
    zeros = np.zeros((2, groups, categories), "float32")
    np.testing.assert_allclose(_np(vae.categorical_kl_to_uniform(zeros)), 0.0, atol=1e-4)
    peaked = zeros.copy()
    peaked[:, :, 3] = 200.0
    np.testing.assert_allclose(_np(vae.categorical_kl_to_uniform(peaked)), groups * math.log(categories), rtol=1e-5)
    np.testing.assert_allclose(_np(vae.bernoulli_kl_to_uniform(np.zeros((2, bits), "float32"))), 0.0, atol=1e-5)
    signs = np.array([[60.0, -60.0, 60.0, 60.0, -60.0, -60.0, 60.0]], "float32")
    np.testing.assert_allclose(_np(vae.bernoulli_kl_to_uniform(signs)), bits * math.log(2.0), rtol=1e-5)


@pytest.mark.parametrize("latent", ["categorical", "binary"])
def test_iwae_bound_is_tighter_than_the_elbo_on_average(latent):
    model = _small(latent)
    x = _images(8, seed=4)
    elbo = np.mean([_np(model.neg_elbo(x, seed=s)).mean() for s in range(30)])
    iwae = _np(model.neg_iwae(x, k=200, seed=0, chunk=50)).mean()
    assert np.isfinite(iwae) and iwae <= elbo
    # One sample of the IWAE is a (sampled-KL) ELBO: equal in expectation.
    iwae_1 = np.mean([_np(model.neg_iwae(x, k=1, seed=s)).mean() for s in range(30)])
    assert abs(iwae_1 - elbo) < 0.05 * elbo


def test_dynamic_binarization_is_fresh_every_epoch_and_reproducible():
    images = np.random.default_rng(0).random((10, 28, 28, 1)).astype("float32")
    data = vae.DynamicallyBinarizedMNIST(images, batch_size=4, seed=5)
    assert len(data) == 3
    first = [data[i] for i in range(len(data))]
    assert [len(b) for b in first] == [4, 4, 2]
    assert set(np.unique(np.concatenate(first))) <= {0.0, 1.0}
    np.testing.assert_array_equal(first[0], data[0])  # the same epoch and batch: the same sample
    data.on_epoch_end()
    second = np.concatenate([data[i] for i in range(len(data))])
    assert not np.array_equal(np.concatenate(first), second)
    # Every image once per epoch: the pixel means match the intensities within Bernoulli noise.
    many = vae.DynamicallyBinarizedMNIST(np.full((3, 28, 28, 1), 0.25, "float32"), batch_size=3, seed=0)
    means = []
    for _ in range(20):
        means.append(many[0].mean())
        many.on_epoch_end()
    assert abs(np.mean(means) - 0.25) < 0.01
    with pytest.raises(IndexError):
        data[3]


def test_fit_with_and_without_targets_lowers_the_neg_elbo_that_evaluate_reports():
    model = _small("categorical", "straight_through")
    x = _images(16, seed=5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)["neg_elbo"]
    model.fit(x, epochs=3, batch_size=8, verbose=0)
    model.fit(x, x, epochs=3, batch_size=8, verbose=0)
    after = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)["neg_elbo"]
    # An untrained decoder puts every pixel at about 1/2 (784 log 2 = 543 nats); 12 Adam steps learn
    # that most pixels are 0.
    assert before > 450.0 and after < before - 50.0


def _former_schedule(step, total_steps, initial=1.0, minimum=0.3):
    """τ of the former in-model schedule (float32): τ₀ (τ_min/τ₀)^min(t/T, 1)."""
    fraction = np.minimum(np.float32(step) / np.float32(total_steps), np.float32(1.0))
    return np.float32(initial) * np.power(np.float32(minimum) / np.float32(initial), fraction)


def test_recipe_annealing_matches_the_former_in_model_schedule_step_for_step():
    task = zoo.registry.get("discrete_vae")
    total = task.epochs * 600  # 60 epochs of 600 batches of 100 images
    callback = vae.temperature_annealing(total, 1.0, task.min_temperature)
    assert isinstance(callback, dab_callbacks.TemperatureSchedule) and callback.update_freq == "batch"
    steps = np.arange(total + 100)
    ours = np.array([callback.schedule(int(t)) for t in steps])
    np.testing.assert_allclose(ours, _former_schedule(steps, total), rtol=2e-6)
    assert ours[0] == 1.0 and ours[total] == pytest.approx(0.3) and ours[-1] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="total_steps"):
        vae.temperature_annealing(0)
    with pytest.raises(ValueError, match="min_temperature"):
        vae.temperature_annealing(10, min_temperature=-1.0)


def test_fit_anneals_tau_per_optimizer_step_through_the_callback():
    model = _small("categorical", "relaxed")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(_np(model.sampler.temperature)))

    model.compile(optimizer="adam")
    model.fit(_images(12), epochs=1, batch_size=2, verbose=0,
              callbacks=[vae.temperature_annealing(4, min_temperature=0.25), Record()])  # 6 steps
    np.testing.assert_allclose(seen, _former_schedule(np.arange(6), 4, 1.0, 0.25), rtol=1e-6)
    # Without the callback τ stays where it is: the model itself has no schedule and no step counter.
    fixed = _small("categorical", "relaxed", temperature=0.7)
    fixed.compile(optimizer="adam")
    fixed.fit(_images(4), epochs=1, batch_size=2, verbose=0)
    assert float(_np(fixed.sampler.temperature)) == pytest.approx(0.7)
    assert {id(w) for w in fixed.non_trainable_weights} <= {id(w) for w in fixed.sampler.weights}


@pytest.mark.parametrize("estimator,anneals", [("relaxed", True), ("straight_through", True), ("dab", False)])
def test_the_recipe_adds_the_annealing_callback_where_there_is_a_temperature(estimator, anneals):
    task = zoo.registry.get("discrete_vae")
    callbacks = task.callbacks(task.build(estimator, **SMALL), total_steps=100)
    assert [type(c) for c in callbacks] == ([dab_callbacks.TemperatureSchedule] if anneals else [])
    if anneals:
        assert callbacks[0].schedule(100) == pytest.approx(task.min_temperature)


def test_train_anneals_tau_over_the_whole_run(tmp_path):
    npz = _fake_npz(tmp_path / "mnist.npz")
    zoo.train("discrete_vae", estimator="relaxed", epochs=2, batch_size=20, data=npz, steps_per_execution=1,
              output_dir=tmp_path / "run", verbose=0, config=SMALL, evaluate_at_end=False, jit_compile=False)
    with open(tmp_path / "run" / "log.csv") as f:
        logged = [float(row["temperature"]) for row in csv.DictReader(f)]
    # 2 epochs of 2 steps: τ at the last step of each epoch (steps 1 and 3 of 4), 1.0 → 0.3 at step 4.
    np.testing.assert_allclose(logged, _former_schedule(np.array([1, 3]), 4), rtol=1e-5)


def test_categorical_latent_noise_is_the_gumbel_noise_op():
    model = _small("categorical")
    np.testing.assert_array_equal(
        _np(model.latent_noise((50, 3, 4), seed=7)), _np(dab_ops.gumbel_noise((50, 3, 4), seed=7))
    )
    # A seed generator gives a reproducible stream, as in evaluation.
    first, second = keras.random.SeedGenerator(3), keras.random.SeedGenerator(3)
    for _ in range(2):
        np.testing.assert_array_equal(
            _np(model.latent_noise((8, 3, 4), seed=first)), _np(dab_ops.gumbel_noise((8, 3, 4), seed=second))
        )


def test_model_config_round_trip(tmp_path):
    model = _small("binary", "dab")
    restored = vae.DiscreteVAEModel.from_config(model.get_config())
    assert restored.get_config() == model.get_config()
    # Configurations saved with the former in-model schedule still load (its arguments are ignored).
    legacy = {**model.get_config(), "min_temperature": 0.3, "anneal_steps": 36000}
    assert vae.DiscreteVAEModel.from_config(legacy).get_config() == model.get_config()
    path = tmp_path / "vae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _images(3)
    np.testing.assert_allclose(_np(loaded.encode(x)), _np(model.encode(x)), rtol=1e-6)


@pytest.mark.parametrize("latent", ["categorical", "binary"])
def test_residual_dab_round_trips_through_keras_files(tmp_path, latent):
    model = _small(latent, "dab", dab_residual=True)
    assert model.get_config()["dab_residual"] is True and model.sampler.estimator.residual is True
    path = tmp_path / "vae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.dab_residual is True and loaded.sampler.estimator.residual is True
    x = _images(3)
    np.testing.assert_allclose(_np(loaded.encode(x)), _np(model.encode(x)), rtol=1e-6)
    # A configuration saved before the argument existed builds the paper's DAB, as it was trained.
    old = {k: v for k, v in model.get_config().items() if k != "dab_residual"}
    restored = vae.DiscreteVAEModel.from_config(old)
    assert restored.dab_residual is False and restored.sampler.estimator.residual is False


@pytest.mark.parametrize("estimator,config", [("straight_through", {}), ("dab", {"dab_residual": True})])
def test_binary_latent_straight_through_and_residual_dab_start_from_the_binary_concrete(estimator, config):
    # Not the identity: the gradient of the hard bit w.r.t. ℓ + L is tanh's, (1 - tanh²(a / τ)) / τ.
    import gradients

    model = _small("binary", estimator, temperature=0.5, **config)
    assert model.sampler.estimator.surrogate == "relaxation"
    a = np.random.default_rng(0).normal(0.0, 1.5, (4, SMALL["bits"])).astype("float32")
    upstream = np.random.default_rng(1).normal(size=a.shape).astype("float32")
    model.sampler(a)  # builds the sampling layer
    res = gradients.layer_gradients(model.sampler, a, upstream)
    np.testing.assert_array_equal(res["output"], np.where(a >= 0, 1.0, -1.0))
    a64 = a.astype("float64")
    np.testing.assert_allclose(res["grad_x"], (1 - np.tanh(a64 / 0.5) ** 2) / 0.5 * upstream, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("latent", ["categorical", "binary"])
@pytest.mark.parametrize("estimator,config", [("straight_through", {}), ("dab", {"dab_residual": True})])
def test_reinmax_sample_gradient_builds_the_reinmax_base_and_round_trips(tmp_path, latent, estimator, config):
    model = _small(latent, estimator, sample_gradient="reinmax", **config)
    assert model.sampler.estimator.surrogate == "reinmax"
    if estimator == "dab":
        assert model.sampler.estimator.state_tag == "ResidualDAB-reinmax"
    assert model.get_config()["sample_gradient"] == "reinmax"
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = _images(8)
    before = _np(model.encoder_layers[0].kernel).copy()
    model.fit(x, epochs=1, batch_size=4, verbose=0)  # the sampler reads the logits: the encoder trains
    assert not np.allclose(_np(model.encoder_layers[0].kernel), before)
    path = tmp_path / "vae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.sample_gradient == "reinmax" and loaded.sampler.estimator.surrogate == "reinmax"
    np.testing.assert_allclose(_np(loaded.encode(x)), _np(model.encode(x)), rtol=1e-6)


def test_reinmax_sample_gradient_is_checked_and_keeps_weights_apart():
    with pytest.raises(ValueError, match=r"`sample_gradient` must be one of .*Received: sample_gradient='rein'"):
        _small("categorical", "straight_through", sample_gradient="rein")
    for estimator, config in (("relaxed", {}), ("dab", {})):  # the relaxation itself; the paper's DAB
        with pytest.raises(ValueError, match=r"`sample_gradient='reinmax'` sets the base gradient of 'straight_through'"):
            _small("categorical", estimator, sample_gradient="reinmax", **config)
    assert zoo.weights.weights_key("dab", True, "reinmax") == "dab_residual_reinmax"
    assert zoo.weights.weights_key("straight_through", False, "reinmax") == "straight_through_reinmax"
    # weights trained with the relaxation's base do not load into a ReinMax model (the config says why)
    shipped = zoo.weights.WEIGHTS_DIR / "discrete_vae-dab_residual.weights.h5"
    with pytest.raises(ValueError, match=r"sample_gradient='reinmax' \(weights: 'relaxation'\)"):
        vae.DiscreteVAE(estimator="dab", dab_residual=True, sample_gradient="reinmax", weights=str(shipped))


def test_train_refuses_a_reinmax_base_where_there_is_none(tmp_path):
    from dab_keras.zoo import training

    with pytest.raises(ValueError, match=r"`sample_gradient` applies to the discrete VAEs only. Received: model 'sorter'"):
        zoo.train("sorter", samples=2048, config={"sample_gradient": "reinmax"}, output_dir=tmp_path / "s")
    with pytest.raises(ValueError, match=r"`sample_gradient='reinmax'` sets the base gradient.*estimator='relaxed'"):
        zoo.train("discrete_vae", estimator="relaxed", epochs=1, config={"sample_gradient": "reinmax"},
                  output_dir=tmp_path / "v")
    assert not (tmp_path / "s").exists() and not (tmp_path / "v").exists()
    task = zoo.registry.get("discrete_vae")
    checked = training.check_arguments(task, estimator="dab", config={"dab_residual": True,
                                                                      "sample_gradient": "reinmax"})
    assert checked["config"] == {"dab_residual": True, "sample_gradient": "reinmax"}
    assert training._run_name("dab", checked["config"]) == "dab_residual_reinmax"
    default = training.check_arguments(task, estimator="straight_through", config={"sample_gradient": "relaxation"})
    assert default["config"] == {}  # the default is the same run as without it


def test_a_registered_task_can_be_removed_again():
    before = zoo.list_models()
    task = vae.VAETask("categorical")
    task.name = "discrete_vae_copy"
    assert zoo.registry.register(task) is task and "discrete_vae_copy" in zoo.list_models()
    with pytest.raises(ValueError, match="'discrete_vae_copy' is registered already"):
        zoo.registry.register(task)
    assert zoo.registry.unregister("discrete_vae_copy") is task
    assert zoo.list_models() == before
    with pytest.raises(ValueError, match="Unknown zoo model 'discrete_vae_copy'"):
        zoo.registry.unregister("discrete_vae_copy")


def test_tasks_are_registered_with_their_latents():
    assert {"discrete_vae", "binary_vae"} <= set(zoo.list_models())
    task = zoo.registry.get("binary_vae")
    assert task.name == "binary_vae" and task.default_estimator == "dab"
    assert task.build("dab", **SMALL).latent == "binary"
    assert zoo.registry.get("discrete_vae").constructor is zoo.DiscreteVAE
    with pytest.raises(ValueError, match="No pretrained weights ship for model 'discrete_vae'"):
        zoo.DiscreteVAE(estimator="straight_through", weights="pretrained")
    with pytest.raises(ValueError, match=r"groups=3 \(weights: 30\)"):
        zoo.DiscreteVAE(estimator="relaxed", weights="pretrained", **SMALL)


_SHARED_MNIST = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist.npz"


_VAE_MANIFESTS = [m for m in zoo.weights.shipped_manifests() if m["model"] in ("discrete_vae", "binary_vae")]


def _estimator_config(manifest):
    """The estimator's constructor arguments a shipped VAE manifest records (`dab_residual`, `sample_gradient`)."""
    return {"dab_residual": manifest["config"].get("dab_residual", False),
            "sample_gradient": manifest["config"].get("sample_gradient", "relaxation")}


@pytest.mark.tensorflow_only  # the manifests' numbers come from TensorFlow's random streams
@pytest.mark.skipif(not _SHARED_MNIST.is_file(), reason="no local copy of mnist.npz beside the checkout")
@pytest.mark.parametrize("manifest", _VAE_MANIFESTS, ids=lambda m: m["weights"])
def test_pretrained_vaes_reproduce_their_manifests_on_real_mnist(manifest):
    task = zoo.registry.get(manifest["model"])
    net = task.build(manifest["estimator"], weights="pretrained", **_estimator_config(manifest))
    metrics = task.evaluate(net, data=_SHARED_MNIST, iwae_k=0)
    for key in ("neg_elbo", "neg_elbo_threshold"):
        assert metrics[key] == pytest.approx(manifest["metrics"][key], abs=1e-3), key
    if manifest["weights"] == "discrete_vae-relaxed.weights.h5":
        assert metrics["neg_elbo"] <= 105.0


def _datasets(path):
    with h5py.File(path, "r") as f:
        found = {}
        f.visititems(lambda name, obj: found.update({name: obj.shape}) if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.mark.parametrize("manifest", _VAE_MANIFESTS, ids=lambda m: m["weights"])
def test_the_weight_layout_of_the_shipped_files_is_kept(manifest, tmp_path):
    task = zoo.registry.get(manifest["model"])
    fresh = task.build(manifest["estimator"], **_estimator_config(manifest))
    fresh.save_weights(tmp_path / "fresh.weights.h5")
    saved, shipped = _datasets(tmp_path / "fresh.weights.h5"), _datasets(zoo.weights.WEIGHTS_DIR / manifest["weights"])
    # Every variable the model saves comes from the shipped file, at the same place and shape; the only
    # model-level variable a file may hold is the former schedule's step counter (files trained before
    # the schedule moved to a callback), which the model skips.
    assert saved.items() <= shipped.items()
    assert not any(name.startswith("vars/") for name in saved)
    assert [name for name in shipped if name.startswith("vars/")] in (["vars/0"], [])
    loaded = task.build(manifest["estimator"], weights="pretrained", **_estimator_config(manifest))
    x = _images(3, seed=8)
    assert not np.allclose(_np(loaded.encode(x)), _np(fresh.encode(x)))


@pytest.mark.parametrize(
    "model_name,estimator",
    [("discrete_vae", "dab"), ("discrete_vae", "straight_through"), ("discrete_vae", "relaxed"),
     ("binary_vae", "dab")],
)
def test_train_writes_weights_that_load_back(tmp_path, monkeypatch, model_name, estimator):
    monkeypatch.setattr(zoo.registry.get(model_name), "iwae_k", 5)
    npz = _fake_npz(tmp_path / "mnist.npz")
    out = zoo.train(model_name, estimator=estimator, epochs=1, batch_size=20, data=npz,
                    output_dir=tmp_path / "run", verbose=0, config=SMALL, jit_compile=True)
    metrics = out["metrics"]
    assert {"neg_elbo", "neg_elbo_threshold", "neg_iwae_k5", "test_images"} <= set(metrics)
    assert metrics["test_images"] == 12 and np.isfinite(metrics["neg_elbo"])
    manifest = zoo.weights.read_manifest(out["manifest"])
    latent = "binary" if model_name == "binary_vae" else "categorical"
    assert manifest["config"]["latent"] == latent and manifest["config"]["estimator"] == estimator
    assert manifest["model"] == model_name
    loaded = zoo.DiscreteVAE(latent=latent, estimator=estimator, weights=out["weights"], **SMALL)
    x = _images(4, seed=6)
    np.testing.assert_allclose(_np(loaded.encode(x)), _np(out["model"].encode(x)), rtol=1e-6, atol=1e-7)
    # The test metrics are reproducible from the saved weights.
    again = zoo.registry.get(model_name).evaluate(loaded, data=npz)
    assert again["neg_elbo"] == pytest.approx(metrics["neg_elbo"], rel=1e-5)
    if estimator == "dab":
        with pytest.raises(ValueError, match=r"hidden_units=\[32\]"):
            zoo.DiscreteVAE(latent=latent, estimator="dab", weights=out["weights"], **{**SMALL, "hidden_units": 32})
        # Another estimator loads the network (DAB's approximator skipped, with a warning).
        with pytest.warns(UserWarning, match="Layer 'sample'.*DAB state"):
            relaxed = zoo.DiscreteVAE(latent=latent, estimator="relaxed", weights=out["weights"], **SMALL)
        np.testing.assert_allclose(_np(relaxed.encode(x)), _np(out["model"].encode(x)), rtol=1e-6, atol=1e-7)
