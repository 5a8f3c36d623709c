"""Weight files: manifests, sha256 and configuration checks, pretrained lookup, shipped files."""

import json
import re
import shutil

import h5py
import keras
import numpy as np
import pytest

import dab_keras as dk
from dab_keras import zoo
from dab_keras.zoo import Sorter, data, registry
from dab_keras.zoo import weights as zoo_weights

TINY = {"length": 5, "hidden_units": (8,), "latent_units": 12, "approximator_units": (4,)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dab_run")
    result = zoo.train(
        "sorter", estimator="dab", samples=1024, batch_size=256, output_dir=out, verbose=0, config=TINY
    )
    return result


def test_train_writes_weights_and_a_complete_manifest(run):
    manifest = zoo_weights.read_manifest(run["manifest"])
    assert run["weights"].name == "sorter-dab.weights.h5" == manifest["weights"]
    assert manifest["sha256"] == data.sha256(run["weights"])
    assert manifest["model"] == "sorter" and manifest["estimator"] == "dab"
    assert manifest["config"] == {
        "length": 5, "hidden_units": [8], "latent_units": 12, "margin": 0.5, "approximator_units": [4],
        "estimator": "dab",
    }
    assert manifest["command"].startswith("dab-zoo train sorter --estimator dab --samples 1024")
    assert manifest["samples_seen"] == 1024 and manifest["steps"] == 4 and manifest["seed"] == 0
    assert set(manifest["metrics"]) >= {"all_or_none_accuracy", "per_position_accuracy", "loss"}
    assert "U(0, 1)" in manifest["data"]


def test_weights_load_back_with_identical_predictions(run):
    x, _ = data.sort_batch(32, 5, seed=0)
    expected = run["model"].predict(x, verbose=0)
    loaded = Sorter(estimator="dab", weights=run["weights"], **TINY)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def test_include_top_false_keeps_the_trained_encoder(run):
    x, _ = data.sort_batch(16, 5, seed=2)
    base = Sorter(estimator="dab", weights=run["weights"], include_top=False, **TINY)
    full = run["model"]
    np.testing.assert_array_equal(
        base.predict(x, verbose=0), full.get_layer("sign")(full.get_layer("latent")(
            full.get_layer("hidden_0")(x)))
    )


def test_a_changed_file_fails_its_sha256_check(run, tmp_path):
    copy = tmp_path / run["weights"].name
    shutil.copy(run["weights"], copy)
    shutil.copy(run["manifest"], zoo_weights.manifest_path(copy))
    with open(copy, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        Sorter(estimator="dab", weights=copy, **TINY)


def test_a_different_configuration_is_named_in_the_error(run):
    with pytest.raises(ValueError, match=r"latent_units=16 \(weights: 12\)"):
        Sorter(estimator="dab", weights=run["weights"], **{**TINY, "latent_units": 16})
    # The estimator is free (its state is skipped or starts fresh), and so are DAB's approximator widths.
    x, _ = data.sort_batch(8, 5, seed=0)
    with pytest.warns(UserWarning, match="Layer 'sign'.*started fresh"):
        other = Sorter(estimator="straight_through", weights=run["weights"], **{**TINY, "approximator_units": (3,)})
    np.testing.assert_array_equal(other.predict(x, verbose=0), run["model"].predict(x, verbose=0))


@pytest.mark.parametrize("trained_with", ["dab", "straight_through"])
def test_shipped_weights_fine_tune_with_any_estimator(trained_with):
    x, _ = data.sort_batch(8, 10, seed=1)
    shipped = Sorter(estimator=trained_with).predict(x, verbose=0)
    for estimator in ("dab", "straight_through", "relaxed"):
        if estimator == trained_with:
            continue
        with pytest.warns(UserWarning, match="Layer 'sign'"):
            model = Sorter(estimator=estimator, weights=trained_with)
        np.testing.assert_array_equal(model.predict(x, verbose=0), shipped)


def test_weights_without_manifest_that_do_not_fit_give_a_clear_error(run, tmp_path):
    lone = tmp_path / "lone.weights.h5"
    shutil.copy(run["weights"], lone)  # no manifest beside it: only Keras's own check remains
    with pytest.raises(ValueError, match="do not fit this sorter"):
        Sorter(estimator="dab", weights=lone, **{**TINY, "latent_units": 16})


def test_weights_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No file at"):
        Sorter(weights=tmp_path / "missing.weights.h5")
    with pytest.raises(ValueError, match="`weights` must be"):
        Sorter(weights=1.5)
    with pytest.raises(ValueError, match="custom estimator object has no shipped weights"):
        Sorter(estimator=dk.estimators.StraightThrough(clip_value=1.0), weights="pretrained")


def test_missing_pretrained_weights_list_what_ships(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo_weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"No pretrained weights ship for model 'sorter' with estimator='relaxed'"):
        Sorter(estimator="relaxed")


def test_manifest_path_pairs_with_the_weights_file(tmp_path):
    assert zoo_weights.manifest_path(tmp_path / "a-b.weights.h5") == tmp_path / "a-b.json"
    path = zoo_weights.write_manifest(_touch(tmp_path / "m.weights.h5"), model="sorter", metrics={"x": 1.0})
    assert json.loads(path.read_text())["sha256"] == data.sha256(tmp_path / "m.weights.h5")


def _touch(path):
    path.write_bytes(b"weights")
    return path


@pytest.mark.parametrize("manifest", zoo_weights.shipped_manifests(), ids=lambda m: m["weights"])
def test_shipped_weights_match_their_manifest_and_load(manifest):
    path = zoo_weights.WEIGHTS_DIR / manifest["weights"]
    assert data.sha256(path) == manifest["sha256"]
    assert manifest["command"].startswith(f"dab-zoo train {manifest['model']} --estimator {manifest['estimator']}")
    assert {"metrics", "data", "seed", "samples_seen", "config"} <= set(manifest)
    # The record must reproduce elsewhere: no path of the machine that trained it.
    for field in ("command", "data"):
        assert not re.search(r"(^|[\s(])(/|[A-Za-z]:\\|~)", manifest[field]), (field, manifest[field])
    task = registry.get(manifest["model"])
    estimator_config = {k: manifest["config"][k] for k in ("dab_residual", "sample_gradient") if k in manifest["config"]}
    model = task.build(manifest["estimator"], weights="pretrained", **estimator_config)
    network = [w for w in model.trainable_weights if "approximator" not in w.path]
    assert sum(int(np.prod(w.shape)) for w in network) == _network_parameters(manifest["model"], manifest["config"])
    # Every trainable array of the model is one of the file's (so the file's values were loaded).
    with h5py.File(path, "r") as f:
        stored = []
        f.visititems(lambda name, obj: stored.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    for w in model.trainable_weights:
        value = np.asarray(keras.ops.convert_to_numpy(w))
        assert any(s.shape == value.shape and np.array_equal(s, value) for s in stored), w.path


def _dense(fan_in, units):
    return fan_in * units + units


def _network_parameters(model, config):
    """Trainable parameters of the network without the estimator's approximator, from the architecture."""
    if model == "sorter":
        widths = [config["length"], *config["hidden_units"], config["latent_units"], config["length"] ** 2]
        return sum(_dense(a, b) for a, b in zip(widths, widths[1:]))
    if model == "mnist_classifier":
        total, channels, side = 0, 1, 28
        for width in config["filters"]:
            for _ in range(config["convs_per_block"]):
                total += 3 * 3 * channels * width + width
                channels = width
            side //= 2
        return total + _dense(side * side * channels, config["features"]) + _dense(config["features"], 10)
    if model in ("discrete_vae", "binary_vae"):
        code = config["bits"] if config["latent"] == "binary" else config["groups"] * config["categories"]
        widths = [28 * 28, *config["hidden_units"], code, *reversed(config["hidden_units"]), 28 * 28]
        return sum(_dense(a, b) for a, b in zip(widths, widths[1:]))
    raise AssertionError(f"no parameter count for {model}")


def test_estimator_names_resolve_to_the_keys_of_weight_files():
    assert zoo_weights.estimator_key("ste") == "straight_through"
    assert zoo_weights.estimator_key("dab") == "dab"
    assert zoo_weights.estimator_key(dk.estimators.Relaxed()) is None
    with pytest.raises(ValueError, match="estimator"):
        zoo_weights.estimator_key("hard")
    assert zoo_weights.weights_filename("sorter", zoo_weights.estimator_key("ste")) == "sorter-straight_through.weights.h5"


def test_describe_source_names_the_file_and_its_digest_not_its_folder(tmp_path):
    path = tmp_path / "deep" / "mnist.npz"
    path.parent.mkdir()
    path.write_bytes(b"not really mnist")
    description = data.describe_source(path)
    assert description == f"mnist.npz (sha256 {data.sha256(path)})"
    assert str(tmp_path) not in description
    assert data.describe_source("tfds") == "TensorFlow Datasets 'mnist'"


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_models_default_estimator_has_shipped_weights(name):
    # `weights="pretrained"` is every constructor's default, so the default estimator must have weights.
    task = registry.get(name)
    shipped = {m["estimator"] for m in zoo_weights.shipped_manifests(name)}
    assert task.default_estimator in shipped, (name, task.default_estimator, shipped)


def test_binary_vae_constructor_defaults_to_its_shipped_estimator():
    model = zoo.DiscreteVAE(latent="binary")  # raised before: no relaxed binary weights ship
    assert model.get_config()["estimator"] == "dab"
    assert zoo.DiscreteVAE().get_config()["estimator"] == "relaxed"


@pytest.fixture(scope="module")
def residual_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("residual_run")
    return zoo.train(
        "sorter", estimator="dab", samples=1024, batch_size=256, output_dir=out, verbose=0,
        config={**TINY, "dab_residual": True},
    )


def test_a_residual_dab_run_records_it_and_loads_only_into_a_residual_dab(run, residual_run):
    manifest = zoo_weights.read_manifest(residual_run["manifest"])
    assert manifest["config"]["dab_residual"] is True and manifest["estimator"] == "dab"
    assert "dab_residual" not in zoo_weights.read_manifest(run["manifest"])["config"]  # the paper's: as before
    assert residual_run["model"].get_layer("sign").estimator.residual is True
    x, _ = data.sort_batch(8, 5, seed=3)
    loaded = Sorter(estimator="dab", weights=residual_run["weights"], dab_residual=True, **TINY)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), residual_run["model"].predict(x, verbose=0))
    # Both directions fail with the configuration error, naming the argument and both values.
    with pytest.raises(ValueError, match=r"different configuration: dab_residual=False \(weights: True\)"):
        Sorter(estimator="dab", weights=residual_run["weights"], **TINY)
    with pytest.raises(ValueError, match=r"different configuration: dab_residual=True \(weights: False\)"):
        Sorter(estimator="dab", weights=run["weights"], dab_residual=True, **TINY)
    # Another estimator takes the network only: the DAB's own settings are not compared.
    with pytest.warns(UserWarning, match="Layer 'sign'"):
        other = Sorter(estimator="straight_through", weights=residual_run["weights"], **TINY)
    np.testing.assert_array_equal(other.predict(x, verbose=0), residual_run["model"].predict(x, verbose=0))


_BUILDERS = {
    "sorter": lambda **kw: zoo.Sorter(**kw),
    "mnist_classifier": lambda **kw: zoo.MNISTClassifier(**kw),
    "binary_vae": lambda **kw: zoo.DiscreteVAE(latent="binary", **kw),
    "discrete_vae": lambda **kw: zoo.DiscreteVAE(latent="categorical", **kw),
}


def _weights(model):
    return [np.asarray(w) for w in model.weights]


@pytest.mark.parametrize("name", sorted(_BUILDERS))
def test_a_residual_dab_model_loads_the_residual_weights_or_says_none_ship(name):
    build = _BUILDERS[name]
    if "dab_residual" not in zoo_weights.shipped_keys(name):
        with pytest.raises(ValueError, match=rf"No pretrained weights ship for model '{name}' with "
                                             r"estimator='dab_residual'.*'dab'"):
            build(estimator="dab", dab_residual=True)
        model = build(estimator="dab", dab_residual=True, weights=None)
        layer = next(x for x in model._flatten_layers() if isinstance(x, dk.layers.DiscreteLayer))
        assert layer.estimator.residual is True
        return
    path = zoo_weights.pretrained_path(name, "dab_residual")
    manifest = zoo_weights.read_manifest(zoo_weights.manifest_path(path))
    assert manifest["estimator"] == "dab" and manifest["config"]["dab_residual"] is True
    residual = build(estimator="dab", dab_residual=True)  # weights="pretrained": the residual file
    layer = next(x for x in residual._flatten_layers() if isinstance(x, dk.layers.DiscreteLayer))
    assert layer.estimator.residual is True
    for got, want in zip(_weights(residual), _weights(build(estimator="dab", dab_residual=True, weights=path))):
        np.testing.assert_array_equal(got, want)
    paper = build(estimator="dab")  # the paper's DAB keeps its own file
    assert not all(np.array_equal(a, b) for a, b in zip(_weights(paper), _weights(residual)))
    # By name: into the paper's DAB the configuration error names the argument; another estimator takes
    # the network (the approximator starts fresh, with a warning).
    with pytest.raises(ValueError, match=r"different configuration: dab_residual=False \(weights: True\)"):
        build(estimator="dab", weights="dab_residual")
    with pytest.warns(UserWarning):
        build(estimator="straight_through", weights="dab_residual")


def test_evaluate_reads_the_configuration_of_shipped_weights_named_by_key():
    from dab_keras.zoo import training

    task = registry.get("mnist_classifier")
    assert training._manifest_config(task, "dab_residual", "dab")["dab_residual"] is True
    assert "dab_residual" not in training._manifest_config(task, "dab", "dab")
    assert "dab_residual" not in training._manifest_config(task, "dab_residual", "straight_through")
    assert training._manifest_config(registry.get("binary_vae"), "dab_residual", "dab") == {}  # none ship
    assert training._manifest_config(task, "pretrained", "dab") == {}


def test_check_config_counts_a_missing_dab_residual_as_false():
    paper, residual = {"config": {"margin": 0.5}}, {"config": {"margin": 0.5, "dab_residual": True}}
    zoo_weights.check_config(paper, {"margin": 0.5}, "at w.h5")
    zoo_weights.check_config(paper, {"margin": 0.5, "dab_residual": False}, "at w.h5")
    zoo_weights.check_config(residual, {"margin": 0.5, "dab_residual": True}, "at w.h5")
    with pytest.raises(ValueError, match=r"dab_residual=False \(weights: True\)"):
        zoo_weights.check_config(residual, {"margin": 0.5}, "at w.h5")
    with pytest.raises(ValueError, match=r"dab_residual=True \(weights: False\)"):
        zoo_weights.check_config(paper, {"margin": 0.5, "dab_residual": True}, "at w.h5")


@pytest.mark.parametrize("factory", [zoo.Sorter, zoo.MNISTClassifier, zoo.DiscreteVAE])
def test_dab_residual_must_be_a_bool_and_needs_the_dab_estimator(factory):
    with pytest.raises(ValueError, match=r"`dab_residual` must be a bool. Received: dab_residual=1"):
        factory(estimator="dab", dab_residual=1, weights=None)
    with pytest.raises(ValueError, match=r"`dab_residual=True` needs estimator='dab'.*estimator='relaxed'"):
        factory(estimator="relaxed", dab_residual=True, weights=None)
    with pytest.raises(ValueError, match=r"`dab_residual=True` needs estimator='dab'"):
        factory(estimator=dk.estimators.DAB(), dab_residual=True, weights=None)  # an object has its own


def test_include_top_false_passes_dab_residual_on(residual_run):
    base = Sorter(estimator="dab", weights=residual_run["weights"], dab_residual=True, include_top=False, **TINY)
    assert base.get_layer("sign").estimator.residual is True
    with pytest.raises(ValueError, match=r"dab_residual=False \(weights: True\)"):
        Sorter(estimator="dab", weights=residual_run["weights"], include_top=False, **TINY)
    with pytest.raises(ValueError, match=r"dab_residual=True \(weights: False\)"):
        zoo.MNISTClassifier(include_top=False, dab_residual=True, weights="dab")  # the paper's DAB weights
    base = zoo.MNISTClassifier(include_top=False, dab_residual=True)  # the shipped residual weights
    assert base.get_layer("sign").estimator.residual is True
    full = zoo.MNISTClassifier(dab_residual=True)
    np.testing.assert_array_equal(base.get_layer("features").get_weights()[0],
                                  full.get_layer("features").get_weights()[0])
