"""Writes `legacy_model.keras` (+ inputs, outputs and weights) with the dab_keras of commit 3c210f1.

Run with that version on the path (e.g. `git archive 3c210f1 | tar -x -C /tmp/old` then
`PYTHONPATH=/tmp/old python tests/data/make_legacy_model.py`): DAB error sums were layer weights, the
approximator a direct sublayer, and the generic bridge layer registered as `dab_keras>DAB`.
"""

import os

import keras
import numpy as np

import dab_keras

OUT = os.path.dirname(os.path.abspath(__file__))


@keras.saving.register_keras_serializable(package="dab_keras_tests", name="legacy_floor_parity")
def legacy_floor_parity(x):
    return keras.ops.mod(keras.ops.floor(x), 2.0)


def main():
    """Writes the files (only when run as a script: the test suite collects this module for doctests)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = keras.layers.Dense(6, name="pre")(inp)
    a = dab_keras.layers.Sign(estimator="dab", name="code")(h)
    b = dab_keras.layers.DAB(legacy_floor_parity, gamma=2.0, name="bridge")(h)
    c = dab_keras.layers.Quantize(levels=3, estimator="relaxed", name="quant")(h)
    d = dab_keras.layers.VectorQuantize(num_codes=4, code_dim=2, estimator="dab", name="vq")(keras.layers.Reshape((3, 2))(h))
    model = keras.Model(inp, keras.layers.Concatenate()([a, b, c, keras.layers.Flatten()(d)]))
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    _ = model(x, training=True)  # non-zero DAB error sums
    model.get_layer("quant").temperature.assign(0.375)
    model.save(os.path.join(OUT, "legacy_model.keras"))
    np.save(os.path.join(OUT, "legacy_inputs.npy"), x[:4])
    np.save(os.path.join(OUT, "legacy_outputs.npy"), keras.ops.convert_to_numpy(model(x[:4], training=False)))
    np.savez(os.path.join(OUT, "legacy_weights.npz"), **{w.path: keras.ops.convert_to_numpy(w) for w in model.weights})


if __name__ == "__main__":
    main()
