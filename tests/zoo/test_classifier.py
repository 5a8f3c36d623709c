"""The zoo's MNIST classifier: shapes, the binary code, training, weight files, fine-tuning, errors."""

import json
import pathlib

import keras
import numpy as np
import pytest

from dab_keras import zoo
from dab_keras.zoo import classifier
from dab_keras.zoo import weights as zoo_weights
from dab_keras.zoo.classifier import ClassifierTask, MNISTClassifier

LAYER_NAMES = [
    "image",
    "conv1_0",
    "pool1",
    "conv2_0",
    "pool2",
    "flatten",
    "dropout",
    "features",
    "sign",
    "logits",
]


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """A Keras-layout mnist.npz of 256 train and 128 test random images (uint8, labels 0-9)."""
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, size=(256, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, size=(256,), dtype=np.uint8),
        x_test=rng.integers(0, 256, size=(128, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, size=(128,), dtype=np.uint8),
    )
    return path


@pytest.fixture(scope="module")
def trained(tiny_mnist, tmp_path_factory):
    """One-epoch `dab_keras.zoo.train` runs on the tiny data set, one per estimator (run on first use)."""
    runs = {}

    def run(estimator):
        if estimator not in runs:
            out = tmp_path_factory.mktemp(f"run-{estimator}")
            result = zoo.train(
                "mnist_classifier", estimator=estimator, epochs=1, data=tiny_mnist, output_dir=out, verbose=0
            )
            runs[estimator] = result["weights"], result["manifest"], result["metrics"]
        return runs[estimator]

    return run


def _images(n=4, seed=1):
    return np.random.default_rng(seed).random((n, 28, 28, 1), dtype=np.float32)


def test_output_shape_dtype_and_layer_names():
    model = MNISTClassifier(weights=None)
    logits = model.predict(_images(), verbose=0)
    assert logits.shape == (4, 10) and logits.dtype == np.float32
    assert model.name == "mnist_classifier"
    assert [layer.name for layer in model.layers] == LAYER_NAMES
    assert "mnist_classifier" in zoo.list_models()
    assert zoo.MNISTClassifier is MNISTClassifier


@pytest.mark.parametrize("margin, values", [(0.0, {-1.0, 1.0}), (0.3, {-1.0, 0.0, 1.0})])
def test_include_top_false_gives_the_code(margin, values):
    base = MNISTClassifier("straight_through", include_top=False, features=64, margin=margin, weights=None)
    code = base.predict(_images(32), verbose=0)
    assert code.shape == (32, 64)
    assert set(np.unique(code)) == values
    assert base.layers[-1].name == "sign"


@pytest.mark.parametrize("estimator", ["dab", "straight_through", "relaxed"])
def test_train_writes_weights_that_load_back(estimator, trained, tiny_mnist):
    weights, manifest_path, metrics = trained(estimator)
    assert weights.name == f"mnist_classifier-{estimator}.weights.h5" and weights.is_file()
    manifest = json.loads(manifest_path.read_text())
    assert manifest["model"] == "mnist_classifier" and manifest["estimator"] == estimator
    assert manifest["config"]["features"] == 128 and manifest["config"]["filters"] == [32, 64]
    assert set(metrics) == {"accuracy", "loss", "test_images"} and metrics["test_images"] == 128
    assert manifest["metrics"] == metrics
    # The metrics are the accuracy and the mean cross-entropy of the saved model on the test images.
    test = zoo.data.load_mnist(tiny_mnist)
    logits = MNISTClassifier(estimator, weights=weights).predict(test["x_test"], verbose=0).astype("float64")
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    assert metrics["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == test["y_test"]))
    assert metrics["loss"] == pytest.approx(-np.mean(log_probs[np.arange(128), test["y_test"]]), rel=1e-5)

    x = _images(8)
    first = MNISTClassifier(estimator, weights=weights).predict(x, verbose=0)
    again = MNISTClassifier(estimator, weights=str(weights)).predict(x, verbose=0)
    np.testing.assert_array_equal(first, again)
    # The code of the include_top=False model is the full model's `sign` output.
    full = MNISTClassifier(estimator, weights=weights)
    code = keras.Model(full.input, full.get_layer("sign").output).predict(x, verbose=0)
    base = MNISTClassifier(estimator, include_top=False, weights=weights)
    np.testing.assert_array_equal(base.predict(x, verbose=0), code)


def test_config_mismatch_names_the_argument_and_another_estimator_loads(trained, tiny_mnist):
    weights, _, _ = trained("dab")
    with pytest.raises(ValueError, match="features=64"):
        MNISTClassifier("dab", features=64, weights=weights)
    with pytest.raises(ValueError, match=r"filters=\[16, 64\]"):
        MNISTClassifier("dab", filters=(16, 64), include_top=False, weights=weights)
    # DAB weights fine-tuned with straight-through: the network loads, DAB's approximator is skipped.
    x = np.load(tiny_mnist)["x_test"][:16, :, :, None].astype("float32") / 255.0
    with pytest.warns(UserWarning, match="Layer 'sign'.*DAB state.*started fresh"):
        other = MNISTClassifier("straight_through", weights=weights, approximator_units=(7,))
    np.testing.assert_array_equal(other.predict(x, verbose=0), MNISTClassifier("dab", weights=weights).predict(x, verbose=0))


def test_evaluate_matches_the_manifest(trained, tiny_mnist):
    weights, _, metrics = trained("straight_through")
    again = zoo.evaluate("mnist_classifier", weights=weights, estimator="straight_through", data=tiny_mnist)
    assert again["test_images"] == 128
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])
    assert again["loss"] == pytest.approx(metrics["loss"], rel=1e-5)


def test_fine_tuning_a_frozen_base_trains_the_new_head_only():
    base = MNISTClassifier("dab", include_top=False, features=32, dropout=0.0, weights=None)
    base.trainable = False
    head = keras.layers.Dense(3, name="new_head")
    model = keras.Model(base.input, head(base.output))
    assert len(model.trainable_weights) == 2
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    # Everything but the DAB layer's running error sums (bookkeeping of its approximation-error metric).
    frozen = [w for w in base.weights if "approximation_error" not in w.path]
    assert len(frozen) == 4 + 2 + 4  # two convolutions, the features layer, the approximator
    before = [keras.ops.convert_to_numpy(w).copy() for w in frozen]
    head_before = [w.copy() for w in head.get_weights()]
    x, y = _images(64), np.random.default_rng(0).integers(0, 3, size=(64,))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for w, b in zip(frozen, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), b, err_msg=w.path)
    assert all(not np.array_equal(a, b) for a, b in zip(head_before, head.get_weights()))
    # Precomputed codes (the exact inference-mode code) to train a head on instead.
    codes = base.predict(x, verbose=0)
    assert set(np.unique(codes)) <= {-1.0, 1.0}


def test_freezing_single_layers():
    base = MNISTClassifier("straight_through", include_top=False, weights=None)
    n_all = len(base.trainable_weights)
    for name in ("conv1_0", "conv2_0"):
        base.get_layer(name).trainable = False
    assert len(base.trainable_weights) == n_all - 4
    assert base.get_layer("features").trainable


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": 0}, "filters"),
        ({"filters": ()}, "filters"),
        ({"filters": "wide"}, "filters"),
        ({"filters": (8, 8, 8, 8, 8)}, "filters"),
        ({"convs_per_block": 0}, "convs_per_block"),
        ({"features": 0}, "features"),
        ({"features": 2.5}, "features"),
        ({"margin": -0.1}, "margin"),
        ({"margin": 1.0}, "margin"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": "x"}, "dropout"),
        ({"approximator_units": (0,)}, "approximator_units"),
        ({"include_top": "no"}, "include_top"),
        ({"estimator": "nope"}, "estimator"),
        ({"weights": 3}, "weights"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    kwargs = {"weights": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        MNISTClassifier(**kwargs)


def test_missing_weights_file():
    with pytest.raises(FileNotFoundError, match="weights"):
        MNISTClassifier(weights="/nonexistent/mnist_classifier-dab.weights.h5")


def test_train_data_shifts_and_shuffles(tiny_mnist, monkeypatch):
    task = zoo.registry.get("mnist_classifier")
    monkeypatch.setattr(task, "max_shift", 0)
    plain = task.train_data(100, seed=0, data=tiny_mnist)
    assert plain.x.shape == (256, 28, 28, 1) and plain.y.shape == (256,) and plain.steps_per_epoch is None
    monkeypatch.undo()
    data = task.train_data(100, seed=0, data=tiny_mnist)
    assert data.epoch_size == 256 and data.steps_per_epoch == 3 == len(data.x)
    x, y = data.x[2]
    assert x.shape == (56, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    x0, _ = data.x[0]
    np.testing.assert_array_equal(x0, task.train_data(100, seed=0, data=tiny_mnist).x[0][0])
    # Each image is its source image shifted by at most max_shift pixels.
    images = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    shifted = classifier.random_shift(images, 2, np.random.default_rng(0))
    inner = (slice(2, -2), slice(2, -2))
    for src, out in zip(images, shifted):
        offsets = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(np.roll(src, (dy, dx), axis=(0, 1))[inner], out[inner])
        ]
        assert len(offsets) == 1
    np.testing.assert_array_equal(classifier.random_shift(images, 0, np.random.default_rng(0)), images)


_SHARED_MNIST = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist.npz"
_SHIPPED = {zoo_weights.weights_key(m["estimator"], m["config"].get("dab_residual", False)): m
            for m in zoo_weights.shipped_manifests("mnist_classifier")}


@pytest.mark.skipif(not _SHARED_MNIST.is_file(), reason="no local copy of mnist.npz beside the checkout")
@pytest.mark.parametrize("key", sorted(_SHIPPED))
def test_pretrained_classifier_reproduces_its_manifest_on_real_mnist(key):
    manifest = _SHIPPED[key]
    model = MNISTClassifier(estimator=manifest["estimator"], dab_residual=key == "dab_residual")
    metrics = ClassifierTask().evaluate(model, data=_SHARED_MNIST)
    assert metrics["accuracy"] == pytest.approx(manifest["metrics"]["accuracy"], abs=1e-4)
    if manifest["estimator"] == "dab":
        assert metrics["accuracy"] >= 0.99
