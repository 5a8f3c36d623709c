"""Backend-agnostic gradients for tests: vector-Jacobian products and finite differences."""

import keras
import numpy as np


def vjp(fn, x, upstream):
    """Returns d<fn(x), upstream>/dx as a NumPy array, on the TensorFlow or JAX backend."""
    x = np.asarray(x)
    upstream = np.asarray(upstream)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = fn(xt)
        g = tape.gradient(y, xt, output_gradients=tf.cast(tf.convert_to_tensor(upstream), y.dtype))
        return np.zeros_like(x) if g is None else g.numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        _, pullback = jax.vjp(fn, jnp.asarray(x))
        return np.asarray(pullback(jnp.asarray(upstream, dtype=fn(jnp.asarray(x)).dtype))[0])
    raise NotImplementedError(backend)


def jacobian(fn, x):
    """Full Jacobian of `fn` at `x`, shape `fn(x).shape + x.shape`, from one VJP per output entry."""
    x = np.asarray(x)
    y = np.asarray(fn(x))
    jac = np.zeros(y.shape + x.shape, dtype=np.float64)
    for idx in np.ndindex(*y.shape):
        e = np.zeros(y.shape, dtype=y.dtype)
        e[idx] = 1
        jac[idx] = vjp(fn, x, e)
    return jac


def finite_difference_jacobian(fn, x, eps=1e-3):
    """Central-difference Jacobian of `fn` at `x` computed in float64 NumPy inputs."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(fn(x), dtype=np.float64)
    jac = np.zeros(y.shape + x.shape)
    for idx in np.ndindex(*x.shape):
        dx = np.zeros_like(x)
        dx[idx] = eps
        jac[(...,) + idx] = (np.asarray(fn(x + dx), np.float64) - np.asarray(fn(x - dx), np.float64)) / (2 * eps)
    return jac
