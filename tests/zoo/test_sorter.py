"""The zoo's sorter: architecture, loss and metrics, training data, shipped weights."""

import keras
import numpy as np
import pytest

from dab_keras.zoo import Sorter, data
from dab_keras.zoo import sorter as zoo_sorter
from dab_keras.zoo import weights as zoo_weights


def _np_sorting_loss(y, logits):
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(log_p, y[..., None], -1)[..., 0].sum(-1)


@pytest.mark.parametrize("estimator", ["dab", "straight_through", "relaxed"])
def test_sorter_maps_sequences_to_square_logits(estimator):
    model = Sorter(estimator=estimator, weights=None)
    x, _ = data.sort_batch(5, seed=0)
    logits = np.asarray(model(x))
    assert logits.shape == (5, 10, 10) and logits.dtype == np.float32
    assert [layer.name for layer in model.layers] == [
        "sequence", "hidden_0", "hidden_1", "latent", "sign", "scores", "logits"
    ]


def test_sorter_without_top_ends_at_the_ternary_code():
    model = Sorter(estimator="straight_through", length=6, include_top=False, weights=None)
    code = np.asarray(model(data.sort_batch(64, 6, seed=1)[0]))
    assert code.shape == (64, 256)
    assert set(np.unique(code)) <= {-1.0, 0.0, 1.0}


def test_sorter_size_arguments_shape_the_model():
    model = Sorter(estimator="dab", length=5, hidden_units=(16,), latent_units=32, approximator_units=8,
                   weights=None)
    assert model.output_shape == (None, 5, 5)
    assert model.get_layer("latent").units == 32
    approximator = model.get_layer("sign").approximator
    model(np.zeros((2, 5), "float32"), training=True)
    assert approximator.units == (8,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"length": 1}, "length"),
        ({"latent_units": 0}, "latent_units"),
        ({"hidden_units": (16, -1)}, "hidden_units"),
        ({"estimator": "sorted"}, "estimator"),
        ({"weights": 3}, "weights"),
    ],
)
def test_sorter_rejects_bad_arguments_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sorter(**{"weights": None, **kwargs})


def test_sorting_loss_and_metrics_match_numpy(rng):
    logits = rng.normal(size=(7, 4, 4)).astype("float32") * 3
    y = np.stack([rng.permutation(4) for _ in range(7)]).astype("int32")
    y[0] = np.argmax(logits[0], -1)  # one sequence fully right
    np.testing.assert_allclose(
        np.asarray(zoo_sorter.sorting_loss(y, logits)), _np_sorting_loss(y, logits), rtol=1e-5
    )
    hits = np.argmax(logits, -1) == y
    np.testing.assert_array_equal(np.asarray(zoo_sorter.all_or_none_accuracy(y, logits)), hits.all(-1))
    np.testing.assert_allclose(np.asarray(zoo_sorter.per_position_accuracy(y, logits)), hits.mean(-1))
    assert np.asarray(zoo_sorter.all_or_none_accuracy(y, logits))[0] == 1.0


def test_test_set_is_fixed_and_sorted_by_its_targets():
    x1, y1 = zoo_sorter.test_set(size=1000)
    x2, y2 = zoo_sorter.test_set(size=1000)
    np.testing.assert_array_equal(x1, x2)
    assert np.all(np.diff(np.take_along_axis(x1, y1, -1), axis=-1) > 0)


def test_pydataset_batches_are_fresh_and_reproducible():
    seq = zoo_sorter.SortingSequences(32, 10, steps_per_epoch=3, seed=5)
    assert len(seq) == 3
    (xa, ya), (xb, _) = seq[0], seq[1]
    assert not np.array_equal(xa, xb)
    np.testing.assert_array_equal(ya, np.argsort(xa, -1))
    seq.on_epoch_end()
    assert not np.array_equal(seq[0][0], xa)  # a new epoch brings new sequences
    np.testing.assert_array_equal(zoo_sorter.SortingSequences(32, 10, 3, seed=5)[0][0], xa)


@pytest.mark.tensorflow_only
def test_tf_dataset_batches_are_fresh_and_sorted():
    ds = zoo_sorter.tf_sorting_dataset(16, 7, seed=3)
    (x0, y0), (x1, y1) = [(np.asarray(a), np.asarray(b)) for a, b in ds.take(2)]
    assert x0.shape == (16, 7) and y0.dtype == np.int32
    assert not np.array_equal(x0, x1)
    np.testing.assert_array_equal(y1, np.argsort(x1, -1, kind="stable"))
    again = next(iter(zoo_sorter.tf_sorting_dataset(16, 7, seed=3, initial_step=1)))
    np.testing.assert_array_equal(np.asarray(again[0]), x1)  # resuming continues the stream


def test_evaluate_scores_a_perfect_model_as_perfect():
    class Oracle(keras.Model):
        def call(self, x):
            order = keras.ops.argsort(x, axis=-1)
            return keras.ops.one_hot(order, 10) * 50.0

    inputs = keras.Input((10,))
    model = keras.Model(inputs, Oracle()(inputs))
    metrics = zoo_sorter.SorterTask().evaluate(model, size=2000)
    assert metrics["all_or_none_accuracy"] == 1.0 and metrics["per_position_accuracy"] == 1.0
    assert metrics["loss"] < 1e-6 and metrics["test_sequences"] == 2000


_SHIPPED = {zoo_weights.weights_key(m["estimator"], m["config"].get("dab_residual", False)): m
            for m in zoo_weights.shipped_manifests("sorter")}


@pytest.mark.skipif("dab" not in _SHIPPED, reason="no pretrained DAB sorter installed")
def test_the_default_pretrained_sorter_is_the_papers_dab():
    from dab_keras.layers.base import DiscreteLayer

    estimators = [x.estimator for x in Sorter()._flatten_layers() if isinstance(x, DiscreteLayer)]
    assert [(e.name, e.residual) for e in estimators] == [("dab", False)]


@pytest.mark.parametrize("key", sorted(_SHIPPED))
def test_pretrained_sorters_meet_the_target_and_reproduce_their_manifests(key):
    manifest = _SHIPPED[key]
    model = Sorter(estimator=manifest["estimator"], dab_residual=key == "dab_residual")  # pretrained weights
    metrics = zoo_sorter.SorterTask().evaluate(model)
    assert metrics["all_or_none_accuracy"] >= 0.95
    # The budget is 0.4 B sequences; `--samples` rounds to whole epochs of 1,000 steps of 1,024.
    assert manifest["samples_seen"] == manifest["steps"] * 1024 <= 400_000_000 + 1024 * 1000
    assert abs(manifest["metrics"]["all_or_none_accuracy"] - metrics["all_or_none_accuracy"]) < 1e-3
