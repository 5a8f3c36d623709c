"""Backend-agnostic gradients for tests: vector-Jacobian products and finite differences."""

import functools

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
    fn = compiled(fn)
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


def compiled(fn):
    """`fn` under `jax.jit` on JAX (one compilation serves every call of the same shape), else `fn`."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


def compute_dtype():
    """The most precise float dtype the backend computes Keras ops in: float64 on TensorFlow, float32 on
    JAX (Keras promotes float64 to float32 there unless x64 is enabled globally)."""
    return "float32" if keras.backend.backend() == "jax" else "float64"


def dyadic(x, bits=10):
    """`x` rounded to multiples of 2**-bits in `compute_dtype()`, so power-of-two steps stay exact."""
    x = np.asarray(x, np.float64)
    return (np.round(x * 2.0**bits) / 2.0**bits).astype(compute_dtype())


def finite_difference_vjp(fn, x, upstream, eps):
    """Fourth-order central difference of `<fn(x), upstream>` w.r.t. `x`, evaluated in `x`'s dtype.

    Uses the stencil (f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / 12h, accurate to O(h^4).
    """
    x = np.asarray(x)
    upstream = np.asarray(upstream, np.float64)
    out = np.zeros(x.shape, np.float64)
    for idx in np.ndindex(*x.shape):
        values = []
        for k in (-2, -1, 1, 2):
            xk = x.copy()
            xk[idx] = xk[idx] + x.dtype.type(k * eps)
            values.append(np.sum(np.asarray(fn(xk), np.float64) * upstream))
        out[idx] = (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * eps)
    return out


def check_vjp(fn, x, upstream=None, eps=None, rtol=None, seed=0):
    """Asserts that the autodiff VJP of `fn` at `x` matches finite differences; returns both.

    `x` is rounded onto a dyadic grid in `compute_dtype()` (float64 on TensorFlow, float32 on JAX) and
    `upstream` defaults to a fixed random normal tensor shaped like `fn(x)`. Steps and tolerances follow the
    dtype; the tolerance is `rtol` times the largest finite-difference entry (plus `rtol` element-wise).
    """
    x = dyadic(x)
    fn = compiled(fn)
    double = x.dtype == np.float64
    if upstream is None:
        shape = np.asarray(fn(x)).shape
        upstream = np.random.default_rng(seed).normal(size=shape)
    eps = (2.0**-12 if double else 2.0**-6) if eps is None else eps
    rtol = (1e-6 if double else 3e-3) if rtol is None else rtol
    grad = vjp(fn, x, upstream)
    fd = finite_difference_vjp(fn, x, upstream, eps)
    np.testing.assert_allclose(grad, fd, rtol=rtol, atol=rtol * max(np.abs(fd).max(), 1e-3))
    return grad, fd


def layer_gradients(layer, x, upstream, include_losses=False):
    """Runs `layer(x, training=True)` and differentiates `<output, upstream>` (+ the sum of the layer's
    losses when `include_losses`) w.r.t. `x` and `layer.trainable_variables`.

    The layer must already be built. Returns a dict of NumPy values: `output`, `losses` (list),
    `grad_x`, and `grad_weights` (a list aligned with `layer.trainable_variables`, `None` where the
    objective does not depend on that weight on TensorFlow, zeros on JAX).
    """
    x = np.asarray(x)
    upstream = np.asarray(upstream)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        weights = list(layer.trainable_variables)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
            losses = list(layer.losses)
            objective = tf.reduce_sum(y * tf.cast(upstream, y.dtype))
            if include_losses:
                objective = objective + tf.add_n([tf.cast(v, y.dtype) for v in losses])
        grads = tape.gradient(objective, [xt] + weights)
        grad_x = np.zeros_like(x) if grads[0] is None else grads[0].numpy()
        return {
            "output": y.numpy(),
            "losses": [np.asarray(v) for v in losses],
            "grad_x": grad_x,
            "grad_weights": [None if g is None else np.asarray(g) for g in grads[1:]],
        }
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def objective(trainable, xj):
            y, _, losses = layer.stateless_call(trainable, non_trainable, xj, training=True, return_losses=True)
            total = jnp.sum(y * jnp.asarray(upstream, y.dtype))
            if include_losses:
                total = total + sum(jnp.asarray(v, y.dtype) for v in losses)
            return total, (y, losses)

        grad_fn = jax.jit(jax.grad(objective, argnums=(0, 1), has_aux=True))
        (grad_w, grad_x), (y, losses) = grad_fn(trainable, jnp.asarray(x))
        return {
            "output": np.asarray(y),
            "losses": [np.asarray(v) for v in losses],
            "grad_x": np.asarray(grad_x),
            "grad_weights": [np.asarray(g) for g in grad_w],
        }
    raise NotImplementedError(backend)


@functools.cache
def _jax_hard_soft_and_grad(fn, static):
    import jax
    import jax.numpy as jnp

    def run(inputs, upstreams, params):
        def objective(inputs):
            hard, soft = fn(*inputs, *params, *static)
            total = sum(jnp.sum(s * jnp.asarray(u, s.dtype)) for s, u in zip(soft, upstreams))
            return total, (hard, soft)

        grads, (hard, soft) = jax.grad(objective, has_aux=True)(inputs)
        return hard, soft, grads

    return jax.jit(run)


def hard_soft_and_grad(fn, inputs, upstreams, params=(), static=()):
    """Runs `hard, soft = fn(*inputs, *params, *static)` (two tuples of tensors) and differentiates
    `sum_i <soft[i], upstreams[i]>` w.r.t. every array in `inputs`.

    `params` are numbers passed as tensors (e.g. a temperature); `static` are Python values the function
    branches on (e.g. `k`, a direction). On JAX the whole computation is compiled once per `fn`, input
    shapes and `static`, which is much faster than op-by-op dispatch when shapes vary. `fn` must be a
    module-level function for that cache to hit. Returns NumPy `(hard, soft, grads)`.
    """
    inputs = tuple(np.asarray(v) for v in inputs)
    upstreams = tuple(np.asarray(u) for u in upstreams)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(v) for v in inputs]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            hard, soft = fn(*tensors, *params, *static)
            total = tf.add_n([tf.reduce_sum(s * tf.cast(u, s.dtype)) for s, u in zip(soft, upstreams)])
        grads = tape.gradient(total, tensors)
        grads = [np.zeros_like(v) if g is None else g.numpy() for v, g in zip(inputs, grads)]
    elif backend == "jax":
        params = tuple(np.float32(p) for p in params)
        hard, soft, grads = _jax_hard_soft_and_grad(fn, tuple(static))(inputs, upstreams, params)
    else:
        raise NotImplementedError(backend)
    as_numpy = lambda values: tuple(np.asarray(v) for v in values)  # noqa: E731
    return as_numpy(hard), as_numpy(soft), as_numpy(grads)
