"""Every relaxation refuses a number τ <= 0 or non-finite, naming `temperature`; a tensor τ gives NaN."""

import keras
import numpy as np
import pytest

from dab_keras import ops as dab_ops

X = np.array([[0.3, -1.2, 2.0, 0.7]], "float32")
CODEBOOK = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, 0.5]], "float32")

# name: x, tau -> output (every op of `dab_keras.ops` that takes a temperature).
RELAXATIONS = {
    "soft_sign": lambda x, t: dab_ops.soft_sign(x, t),
    "soft_sign_margin": lambda x, t: dab_ops.soft_sign(x, t, margin=0.5),
    "soft_quantize": lambda x, t: dab_ops.soft_quantize(x, 3, t),
    "soft_vector_quantize": lambda x, t: dab_ops.soft_vector_quantize(x, CODEBOOK, t),
    "tempered_softmax": lambda x, t: dab_ops.tempered_softmax(x, t),
    "gumbel_softmax": lambda x, t: dab_ops.gumbel_softmax(x, t, seed=1),
    "soft_top_k": lambda x, t: dab_ops.soft_top_k(x, 2, t),
    "soft_top_k_all": lambda x, t: dab_ops.soft_top_k(x, 4, t),  # k = n short-cuts: τ is still checked
    "neural_sort": lambda x, t: dab_ops.neural_sort(x, t),
    "soft_sort": lambda x, t: dab_ops.soft_sort(x, t),
    "soft_sort_values": lambda x, t: dab_ops.soft_sort_values(x, t),
    "soft_sort_values_softsort": lambda x, t: dab_ops.soft_sort_values(x, t, relaxation="softsort"),
    "soft_rank": lambda x, t: dab_ops.soft_rank(x, t),
    "soft_rank_softsort": lambda x, t: dab_ops.soft_rank(x, t, relaxation="softsort"),
}
BAD = [0.0, -1.0, -1e-30, float("nan"), float("inf"), -float("inf"), np.float32(-0.5), np.array(0.0), True]


def test_the_table_covers_every_op_with_a_temperature():
    import inspect

    with_temperature = {
        name for name in dab_ops.__all__ if "temperature" in inspect.signature(getattr(dab_ops, name)).parameters
    }
    covered = {name.replace("_margin", "").replace("_softsort", "").replace("_all", "") for name in RELAXATIONS}
    assert with_temperature <= covered, with_temperature - covered


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
@pytest.mark.parametrize("tau", BAD, ids=repr)
def test_a_number_temperature_must_be_finite_and_positive(name, tau):
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number > 0\. Received: temperature="):
        RELAXATIONS[name](X, tau)


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
def test_valid_temperatures_of_every_kind_agree(name):
    fn = RELAXATIONS[name]
    expected = np.asarray(fn(X, 0.5))
    assert np.all(np.isfinite(expected))
    for tau in (np.float32(0.5), np.array(0.5), np.array([0.5]), keras.ops.convert_to_tensor(0.5),
                keras.Variable(0.5, trainable=False)):
        np.testing.assert_allclose(np.asarray(fn(X, tau)), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_an_invalid_tensor_temperature_gives_nan_not_an_inverted_result(name, tau):
    if name == "soft_top_k_all":
        pytest.skip("k = n: the mask is all ones whatever τ")
    out = np.asarray(RELAXATIONS[name](X, keras.ops.convert_to_tensor(tau)))
    assert np.isnan(out).all()


@pytest.mark.parametrize("name", ["soft_sign", "soft_rank", "soft_top_k", "neural_sort"])
def test_an_invalid_tensor_temperature_gives_nan_under_jit(name):
    fn = RELAXATIONS[name]
    if keras.backend.backend() == "jax":
        import jax

        compiled = jax.jit(fn)
    else:
        import tensorflow as tf

        compiled = tf.function(fn, jit_compile=True)
    tau = keras.ops.convert_to_tensor(np.float32(-1.0))
    assert np.isnan(np.asarray(compiled(X, tau))).all()
    np.testing.assert_allclose(np.asarray(compiled(X, keras.ops.convert_to_tensor(np.float32(0.5)))),
                               np.asarray(fn(X, 0.5)), rtol=1e-5, atol=1e-6)
