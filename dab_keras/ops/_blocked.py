r"""Row-blocked relaxed permutations: $\hat P x$ and $\hat P^\top w$ without the $(n, n)$ matrix.

NeuralSort and SoftSort both give a relaxed permutation matrix whose rows are softmaxes of logits

$$ L_{ij} = \begin{cases} Z_{ij} - \max_k Z_{ik},\ Z_{ij} = r_i s_j - a_j & \text{NeuralSort: }
   r_i = n + 1 - 2i,\ a = A_s \mathbf 1 \\ -|y_i - s_j| & \text{SoftSort: } y = \operatorname{sort}(s)
   \end{cases} $$

where $s$ (and $a$, $y$) already carry the inverse temperature (the callers pass $\beta s$ with
$\beta = c/\tau$ and $|s| < 4$ before scaling). Every $L_{ij} \le 0$ and each row has a 0, so
$E = e^L$ neither overflows nor vanishes.

The functions compute the values $v = \hat P x$ and the ranks $\rho = \hat P^\top w$ ($w_i = i$) one
block of rows at a time, under a custom gradient that recomputes each block in the backward pass: memory
is $O(\text{batch} \cdot \text{block} \cdot n)$. With $d_i = \sum_j E_{ij}$ (kept from the forward
pass), upstream gradient $g$ and $\bar L = \partial \mathcal L / \partial L$:

- values: $\bar x_j = \sum_i (g_i / d_i) E_{ij}$ and $\bar L_{ij} = (g_i / d_i) E_{ij} (x_j - v_i)$;
- ranks: $\bar L_{ij} = (w_i / d_i) E_{ij} (g_j - t_i)$, $t_i = \sum_k E_{ik} g_k / d_i$;

then NeuralSort's $\bar s_j = \sum_i r_i \bar L_{ij}$, $\bar a_j = -\sum_i \bar L_{ij}$ are sums over rows
of $E$ weighted by row vectors, i.e. one small matrix product per block ($\bar L$ is never formed), and
SoftSort's $\bar s_j = \sum_i \bar L_{ij} \operatorname{sign}(y_i - s_j) = $ minus the row sums
$\bar y_i$ summed the other way. The row maxima need no gradient (each row of $\bar L$ sums to 0).
Written around the column $\sigma(i)$ where row $i$ peaks ($x_j - v_i = (x_j - x_{\sigma(i)}) +
(x_{\sigma(i)} - v_i)$), a one-hot row cancels exactly.
"""

import functools

import keras
from keras import ops

KINDS = ("neuralsort", "softsort")
DEFAULT_BLOCK_SIZE = 64


def _rows(t, start, size):
    """Rows `[start, start + size)` of the second axis of `t` (batch, n_padded, ...)."""
    begin = (0, start) + (0,) * (len(t.shape) - 2)
    return ops.slice(t, begin, (ops.shape(t)[0], size) + tuple(t.shape[2:]))


def _matvec(e, v):
    """`e @ v` for e (batch, B, n) and v (batch, n): (batch, B)."""
    return ops.squeeze(ops.matmul(e, ops.expand_dims(v, -1)), -1)


def _weighted_rows(weights, e):
    """`weights @ e` for weights (batch, K, B) and e (batch, B, n): K weighted sums of e's rows."""
    return ops.matmul(weights, e)


def _exp_logits(kind, block, start, s, a, y_padded, row_factors, peaks):
    """$E = e^L$ for the rows `[start, start + block)`: (batch, block, n)."""
    if kind == "neuralsort":
        # L_ij = r_i (s_j - s_σ(i)) - (a_j - a_σ(i)): Z_ij less its value at the column σ(i) where row i
        # peaks (NeuralSort's theorem), so L_iσ(i) is exactly 0 whatever the rounding, and no pass over
        # the row for its maximum. Every other L_ij is <= 0 in exact arithmetic; clamping the rounded
        # value at 0 only brings it closer (with near-ties at a huge β the rounding could overflow exp).
        rb = _rows(row_factors, start, block)[..., 0]
        ps, pa = (ops.expand_dims(_rows(p, start, block), -1) for p in peaks)
        logits = ops.expand_dims(rb, -1) * (ops.expand_dims(s, -2) - ps) - (ops.expand_dims(a, -2) - pa)
        return ops.exp(ops.minimum(logits, 0.0))
    yb = _rows(y_padded, start, block)
    return ops.exp(-ops.abs(ops.expand_dims(yb, -1) - ops.expand_dims(s, -2)))


def _kernels(kind, mode, n, block):
    """The blocked forward pass and its recomputing backward pass, as two functions of tensors only.

    `forward(y, s, a, x, scale, r, perm) -> (out, den)` and
    `backward(y, s, a, x, scale, r, perm, out, den, upstream) -> (dy, ds, da, dx)` (the column gradients
    before the final multiplication by `scale`); `den` holds the row sums $d_i$ (padded rows: 1).
    """
    blocks = -(-n // block)
    pad = blocks * block - n
    width = blocks * block

    def padded(t):
        # Repeat the last row: a real row keeps every softmax finite; its weight and gradient are 0.
        return ops.concatenate([t, ops.repeat(t[:, -1:], pad, axis=1)], axis=1) if pad else t

    def zero_padded(t):
        return ops.pad(t, ((0, 0), (0, pad))) if pad else t

    def setup(y, s, a, r, perm):
        weights = zero_padded(ops.broadcast_to(ops.cast(ops.arange(1, n + 1), s.dtype), ops.shape(s)))
        # NeuralSort's row i of Z is [r_i, -1] · [s_j, a_j]: one matrix product per block.
        row_factors = padded(ops.stack([r, -ops.ones_like(r)], axis=-1))  # (batch, n_pad, 2)
        index = ops.cast(perm, "int32")
        peaks = tuple(padded(ops.take_along_axis(t, index, axis=-1)) for t in (s, a))  # s_σ(i), a_σ(i)
        return weights, row_factors, padded(y), peaks

    def forward(y, s, a, x, scale, r, perm):
        dtype = s.dtype
        batch = ops.shape(s)[0]
        weights, row_factors, y_padded, peaks = setup(y, s, a, r, perm)

        def body(b, carry):
            out, den = carry
            start = b * block
            e = _exp_logits(kind, block, start, s, a, y_padded, row_factors, peaks)
            if mode == "values":
                sums = ops.matmul(e, ops.stack([x, ops.ones_like(x)], axis=-1))  # (batch, B, 2)
                d = sums[..., 1]
                out = ops.slice_update(out, (0, start), scale * (sums[..., 0] / d))
            else:
                d = ops.sum(e, axis=-1)
                coef = _rows(weights, start, block) / d
                out = out + ops.squeeze(_weighted_rows(ops.expand_dims(coef, -2), e), -2)
            return out, ops.slice_update(den, (0, start), d)

        init = (ops.zeros((batch, width if mode == "values" else n), dtype=dtype), ops.ones((batch, width), dtype))
        out, den = ops.fori_loop(0, blocks, body, init)
        if mode == "values":
            out = out[:, :n]
        return out, den

    def backward(y, s, a, x, scale, r, perm, out, den, g):
        dtype = s.dtype
        batch = ops.shape(s)[0]
        weights, row_factors, y_padded, peaks = setup(y, s, a, r, perm)
        # Row i's entries concentrate near column σ(i) (the i-th in sorted order), so L̄ is written
        # around that column: x_j - v_i = (x_j - x_σ(i)) + δ_i, with δ_i = x_σ(i) - v_i formed
        # directly. Then a hard row cancels exactly (no β-amplified round-off when P̂ is one-hot).
        colvals = x if mode == "values" else g
        sorted_vals = padded(ops.take_along_axis(colvals, ops.cast(perm, "int32"), axis=-1))
        if mode == "values":
            alpha_all = zero_padded(g) / den  # (batch, n_pad)
            delta_all = sorted_vals - padded(out / scale)

        def body(b, acc):
            start = b * block
            e = _exp_logits(kind, block, start, s, a, y_padded, row_factors, peaks)
            d = _rows(den, start, block)
            rowvals = _rows(sorted_vals, start, block)
            if mode == "values":
                # L̄_ij = α_i E_ij (x_j - v_i), α = g / d.
                alpha, delta = _rows(alpha_all, start, block), _rows(delta_all, start, block)
            else:
                # L̄_ij = α_i E_ij (g_j - t_i), α = w / d, t_i = Σ_k P̂_ik g_k.
                alpha = _rows(weights, start, block) / d
                delta = rowvals - _matvec(e, g) / d
            if kind == "neuralsort":
                rb = _rows(row_factors, start, block)[..., 0]
                # (r α) x_σ rounds as x_j (r α) does, so a one-hot row cancels exactly in x_j M0 - M1.
                ra = rb * alpha
                u = ops.stack([ra, ra * rowvals, ra * delta, alpha, alpha * rowvals, alpha * delta], axis=-2)
                return acc + _weighted_rows(u, e)  # (batch, 6, n): combined by `finish`
            yb = _rows(y_padded, start, block)
            sign = ops.sign(ops.expand_dims(yb, -1) - ops.expand_dims(s, -2))
            diff = ops.expand_dims(colvals, -2) - ops.expand_dims(rowvals - delta, -1)
            # ∂L_ij/∂y_i = -sign(y_i - s_j), ∂L_ij/∂s_j = +sign(y_i - s_j).
            signed = e * diff * sign * ops.expand_dims(alpha, -1)
            dy, ds, dx = acc
            dy = ops.slice_update(dy, (0, start), -ops.sum(signed, axis=-1))
            ds = ds + ops.sum(signed, axis=-2)
            if mode == "values":
                dx = dx + ops.squeeze(_weighted_rows(ops.expand_dims(alpha, -2), e), -2)
            return dy, ds, dx

        if kind == "neuralsort":
            return ops.fori_loop(0, blocks, body, ops.zeros((batch, 6, n), dtype))
        zeros = ops.zeros_like(s)
        dy, ds, dx = ops.fori_loop(0, blocks, body, (ops.zeros((batch, width), dtype), zeros, zeros))
        return dy[:, :n], ds, dx

    def finish(acc, x, g):
        """`backward`'s result as `(dy, ds, da, dx)`.

        NeuralSort's column sums are combined here, outside the compiled kernel, where no fused
        multiply-add rounds `x_j M0 - M1` differently from its two products (a one-hot row cancels
        exactly only with both products rounded).
        """
        if kind != "neuralsort":
            dy, ds, dx = acc
            return dy, ds, ops.zeros_like(ds), dx
        colvals = x if mode == "values" else g
        ds = colvals * acc[:, 0] - acc[:, 1] + acc[:, 2]
        da = -(colvals * acc[:, 3] - acc[:, 4] + acc[:, 5])
        dx = acc[:, 3] if mode == "values" else ops.zeros_like(ds)
        return ops.zeros_like(ds), ds, da, dx

    return forward, backward, finish


@functools.cache
def _compiled_kernels(backend, kind, mode, n, block):
    """`_kernels`, on TensorFlow each compiled with XLA.

    In TensorFlow graph mode every op of a block is a separate kernel making a full pass over the
    (batch, block, n) logits; XLA fuses the exponential, the row maximum and sums into the matrix
    products' neighbours. Under an enclosing `jit_compile=True` function the inner one is inlined into the
    same cluster. JAX: the caller's `jax.jit` already compiles the whole step.
    """
    forward, backward, finish = _kernels(kind, mode, n, block)
    if backend == "tensorflow":
        import tensorflow as tf

        forward = tf.function(forward, jit_compile=True, autograph=False)
        backward = tf.function(backward, jit_compile=True, autograph=False)
    return forward, backward, finish


def soft_permute(kind, rows, s, a, x, scale, mode, block_size=DEFAULT_BLOCK_SIZE):
    """`P̂ x` (`mode="values"`) or `P̂ᵀ w` (`mode="ranks"`), row-blocked, with a recomputing gradient.

    Args:
        kind: `"neuralsort"` or `"softsort"`.
        rows: NeuralSort: `r`, (batch, n), without gradient: the row coefficients n + 1 - 2i.
            SoftSort: `y`, (batch, n), the sorted `s` (gets a gradient).
        s: Column parameters (batch, n), the oriented input times β.
        a: NeuralSort's `A_s 1` times β, (batch, n) (SoftSort: ignored, pass zeros).
        x: Values to permute, (batch, n), divided by `scale` (ranks: ignored, pass zeros).
        scale: (batch, 1), no gradient: the values output is `scale · P̂ x`. The backward pass works with
            the upstream gradient as it is and multiplies the column gradients by `scale` last, so the
            gradient `x` receives is `P̂ᵀ g` (give `x` an identity gradient to the caller's values:
            value `values / scale`) and nothing overflows for values near the dtype's largest.
        mode: `"values"` or `"ranks"`.
        block_size: Rows per block (an int >= 1).

    Returns:
        A tensor of shape (batch, n).
    """
    n = s.shape[-1]
    block = max(1, min(int(block_size), n))
    dtype = s.dtype
    forward, backward, finish = _compiled_kernels(keras.backend.backend(), kind, mode, n, block)

    # Every tensor the gradient uses is an argument (JAX cannot close over traced values here).
    @ops.custom_gradient
    def fn(y, s, a, x, scale, r, perm):
        # No gradient flows through the kernels themselves (this function's gradient is `grad`); cutting
        # them off keeps TensorFlow's tape from differentiating the compiled loop.
        out, den = forward(*(ops.stop_gradient(t) for t in (y, s, a, x, scale, r, perm)))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            g = ops.cast(upstream, dtype)
            acc = backward(*(ops.stop_gradient(t) for t in (y, s, a, x, scale, r, perm, out, den, g)))
            dy, ds, da, dx = finish(acc, x, g)
            c = scale if mode == "values" else ops.ones_like(scale)
            return (c * dy, c * ds, c * da, dx, ops.zeros_like(scale), ops.zeros_like(r), ops.zeros_like(perm))

        return out, grad

    # σ(i), the column row i peaks at (as floats: the custom gradient takes floating inputs only).
    perm = ops.cast(ops.argsort(ops.stop_gradient(-s), axis=-1), dtype)
    if kind == "neuralsort":
        return fn(ops.zeros_like(s), s, a, x, scale, ops.stop_gradient(rows), perm)
    return fn(rows, s, a, x, scale, ops.zeros_like(s), perm)
