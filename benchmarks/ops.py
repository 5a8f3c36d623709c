"""Forward+backward cost of every dab_keras layer × estimator, against a bare straight-through baseline.

For each op the script times one training step on a fixed batch: the layer's output with
`training=True`, the scalar loss `sum(output * r) + sum(layer.losses)` (`r` a fixed random tensor), and
the gradients with respect to the input and the layer's trainable weights. The reference row
(`baseline`) is the same hard op written bare, `x + stop_gradient(hard(x) - x)`, timed the same way at
the same shape in the same mode. For DAB rows the approximator network is also timed alone (its output,
`sum(g(x) * r)`, gradients w.r.t. its weights and input), which gives

    DAB overhead = (DAB time - baseline time) / approximator's own time.

Targets: straight-through within 1.1x of the baseline; DAB overhead at most 1.0.

Modes: on TensorFlow, graph (`tf.function`) and XLA (`tf.function(jit_compile=True)`); on JAX,
`jax.jit` of `jax.value_and_grad` over the layers' `stateless_call`. Every function is compiled and
warmed up before timing; each repeat runs enough calls to last `--min-time` seconds, the functions of
one op are timed interleaved (round-robin, rotated every repeat), and the table reports the median over
repeats. Ratios are medians of per-repeat paired ratios (same repeat, adjacent in time), with their
interquartile range in brackets as a noise indicator.

Usage:
    python benchmarks/ops.py --markdown
    KERAS_BACKEND=jax python benchmarks/ops.py --markdown
    python benchmarks/ops.py --layers sign,argmax --repeats 5 --compare-bridge
"""

import argparse
import contextlib
import importlib
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

LAYERS = ("sign", "quantize", "vq", "argmax", "topk", "sort", "sort_perm", "dab")
ESTIMATORS = ("straight_through", "relaxed", "dab")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1024, help="batch size (default 1024)")
    p.add_argument("--n", type=int, default=64, help="feature / axis size of every op but Sort (default 64)")
    p.add_argument("--sort-n", type=int, default=32,
                   help="axis size for Sort, whose relaxations are O(n^2) per row (default 32)")
    p.add_argument("--codes", type=int, default=256, help="VectorQuantize codebook size (default 256)")
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per function (default 15)")
    p.add_argument("--min-time", type=float, default=0.1,
                   help="seconds each repeat of each function runs for (default 0.1)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls after compiling (default 3)")
    p.add_argument("--layers", default=",".join(LAYERS),
                   help=f"comma-separated subset of {','.join(LAYERS)} (default: all)")
    p.add_argument("--estimators", default=",".join(ESTIMATORS),
                   help=f"comma-separated subset of {','.join(ESTIMATORS)} (default: all)")
    p.add_argument("--modes", default=None,
                   help="TensorFlow: comma-separated subset of graph,xla (default both); ignored on JAX")
    p.add_argument("--compare-bridge", action="store_true",
                   help="also time straight-through and DAB with the bridge `hard + (s - stop_gradient(s))` "
                        "in place of the library's custom-gradient bridge")
    p.add_argument("--backend-note", default="", help="free text printed in the header (machine, load...)")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.layers = _check_list("--layers", args.layers, LAYERS)
    args.estimators = _check_list("--estimators", args.estimators, ESTIMATORS)
    return args


def _check_list(flag, value, allowed):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        sys.exit(f"{flag}: unknown {bad or value!r}; choose from {', '.join(allowed)}")
    return items


# ---------------------------------------------------------------------------------------------------- ops


def parity(x):
    """Hard function of the generic `DAB` layer: floor(x) mod 2, element-wise."""
    from keras import ops

    return ops.mod(ops.floor(x), 2.0)


class Case:
    """One op: how to build its layer, its input shape, and its bare straight-through baseline.

    `bare(x, weights)` returns `(output, extra_losses)` where `weights` are the tensors the baseline
    differentiates besides `x` (the codebook for VQ), created by `bare_weights()`.
    """

    def __init__(self, name, label, shape, make_layer, bare, estimators, bare_weights=None, note="",
                 surrogate="identity"):
        self.name = name
        self.surrogate = surrogate  # what straight_through differentiates: "identity" or "relaxation"
        self.label = label
        self.shape = shape
        self.make_layer = make_layer
        self.bare = bare
        self.estimators = estimators
        self.bare_weights = bare_weights or (lambda: [])
        self.note = note


def build_cases(args):
    import keras
    from keras import ops

    import dab_keras
    from dab_keras import ops as dab_ops

    L = dab_keras.layers
    b, n, ns, k_codes = args.batch, args.n, args.sort_n, args.codes
    topk = max(1, n // 8)

    def st(hard):
        return lambda x, w: (x + ops.stop_gradient(hard(x) - x), [])

    def vq_bare(x, w):
        (codebook,) = w
        q, _ = dab_ops.vector_quantize(x, codebook)
        loss = ops.mean(ops.square(ops.stop_gradient(x) - q)) + 0.25 * ops.mean(
            ops.square(x - ops.stop_gradient(q))
        )
        return x + ops.stop_gradient(q - x), [loss]

    def vq_weights():
        limit = 1.0 / k_codes
        init = keras.initializers.RandomUniform(-limit, limit, seed=args.seed)
        return [keras.Variable(init((k_codes, n)), name="bare_codebook")]

    def perm_bare(x, w):
        xb = ops.broadcast_to(ops.expand_dims(x, -2), (*x.shape[:-1], x.shape[-1], x.shape[-1]))
        return xb + ops.stop_gradient(dab_ops.permutation_matrix(x) - xb), []

    cases = [
        Case("sign", "Sign", (b, n), lambda e: L.Sign(estimator=e), st(dab_ops.sign), ESTIMATORS),
        Case("quantize", "Quantize(levels=8)", (b, n), lambda e: L.Quantize(8, estimator=e),
             st(lambda x: dab_ops.quantize(x, 8)), ESTIMATORS),
        Case("vq", f"VectorQuantize({k_codes}x{n})", (b, n),
             lambda e: L.VectorQuantize(k_codes, n, estimator=e), vq_bare, ESTIMATORS, vq_weights,
             note="baseline includes the VQ-VAE codebook+commitment loss the layer adds"),
        Case("argmax", "ArgMax", (b, n), lambda e: L.ArgMax(estimator=e), st(dab_ops.one_hot_argmax),
             ESTIMATORS, surrogate="relaxation"),
        Case("topk", f"TopK(k={topk})", (b, n), lambda e: L.TopK(topk, estimator=e),
             st(lambda x: dab_ops.top_k_mask(x, topk)), ESTIMATORS, surrogate="relaxation"),
        Case("sort", "Sort(values)", (b, ns), lambda e: L.Sort(estimator=e), st(dab_ops.sort), ESTIMATORS,
             surrogate="relaxation", note="NeuralSort surrogate, O(n^2) per row"),
        Case("sort_perm", "Sort(permutation)", (b, ns), lambda e: L.Sort(output_mode="permutation", estimator=e),
             perm_bare, ESTIMATORS, surrogate="relaxation",
             note="output (batch, n, n); baseline is x broadcast to (batch, n, n) + stop_gradient(P - x)"),
        Case("dab", "DAB(parity)", (b, n), lambda e: L.DAB(parity), st(parity), ("dab",),
             note="generic DAB layer, hard_fn = floor(x) mod 2"),
    ]
    return [c for c in cases if c.name in args.layers]


# ------------------------------------------------------------------------------------ bridge variants


def bridge_sub_stop_gradient(hard, surrogate):
    """`hard + (s - stop_gradient(s))`: value exactly `hard` for finite `s`, gradient routed to `s`."""
    from keras import ops

    return ops.stop_gradient(hard) + (surrogate - ops.stop_gradient(surrogate))


@contextlib.contextmanager
def bridge(variant):
    """Temporarily replaces `bridge` in the estimator modules (tracing happens inside)."""
    if variant == "custom_gradient":
        yield
        return
    modules = [importlib.import_module(f"dab_keras.estimators.{name}")
               for name in ("dab", "relaxed", "straight_through")]
    for m in modules:
        if not callable(getattr(m, "bridge", None)):
            raise RuntimeError(f"{m.__name__} has no `bridge` to replace; update benchmarks/ops.py")
    saved = [m.bridge for m in modules]
    try:
        for m in modules:
            m.bridge = bridge_sub_stop_gradient
        yield
    finally:
        for m, f in zip(modules, saved):
            m.bridge = f


def check_bridge_replacement():
    """Exits unless `bridge("sub_stop_gradient")` reaches the layers: only that bridge gives NaN at x = ±inf
    (`inf - inf`) with the identity surrogate; the library's gives ±1."""
    import dab_keras

    with bridge("sub_stop_gradient"):
        y = np.asarray(dab_keras.layers.Sign()(np.array([[np.inf, -np.inf]], "float32"), training=True))
    if not np.isnan(y).all():
        sys.exit("--compare-bridge: replacing dab_keras' bridge had no effect; update bridge()")


# ------------------------------------------------------------------------------------ step builders


class Runner:
    """Builds compiled forward+backward step functions for one backend."""

    def __init__(self, backend, args):
        self.backend = backend
        self.args = args
        if backend == "tensorflow":
            modes = (args.modes or "graph,xla").split(",")
            bad = [m for m in modes if m not in ("graph", "xla")]
            if bad:
                sys.exit(f"--modes: unknown {bad}; choose from graph, xla")
            self.modes = modes
        else:
            self.modes = ["jit"]

    # Each builder returns a zero-argument callable running one step and returning something to block on.

    def layer_step(self, layer, x, r, mode, variant):
        if self.backend == "tensorflow":
            import tensorflow as tf

            def forward(x):
                with bridge(variant):
                    out = layer(x, training=True)
                return out, list(layer.losses)

            return self._tf_step(forward, layer.trainable_variables, x, r, mode, tf)
        import jax

        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        def loss_fn(tv, x, ntv):
            with bridge(variant):
                out, ntv, losses = layer.stateless_call(tv, ntv, x, training=True, return_losses=True)
            return _total(out, r, losses), ntv

        fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
        return lambda: fn(tv, x, ntv)

    def approximator_step(self, approximator, x, r, mode):
        if self.backend == "tensorflow":
            import tensorflow as tf

            return self._tf_step(lambda x: (approximator(x), []), approximator.trainable_variables, x, r, mode, tf)
        import jax

        tv = [v.value for v in approximator.trainable_variables]
        ntv = [v.value for v in approximator.non_trainable_variables]

        def loss_fn(tv, x):
            out, _ = approximator.stateless_call(tv, ntv, x)
            return _total(out, r, [])

        fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
        return lambda: fn(tv, x)

    def approximator_forward(self, approximator, x, mode):
        """The approximator's output alone (no loss, no gradient): one forward pass."""
        if self.backend == "tensorflow":
            import tensorflow as tf

            fn = tf.function(lambda x: (approximator(x),), jit_compile=(mode == "xla"))
            return lambda: fn(x)
        import jax

        tv = [v.value for v in approximator.trainable_variables]
        ntv = [v.value for v in approximator.non_trainable_variables]
        fn = jax.jit(lambda tv, x: approximator.stateless_call(tv, ntv, x)[0])
        return lambda: fn(tv, x)

    def bare_step(self, bare, weights, x, r, mode):
        if self.backend == "tensorflow":
            import tensorflow as tf

            return self._tf_step(lambda x: bare(x, [w.value for w in weights]), weights, x, r, mode, tf)
        import jax

        ws = [w.value for w in weights]

        def loss_fn(ws, x):
            out, losses = bare(x, ws)
            return _total(out, r, losses)

        fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
        return lambda: fn(ws, x)

    def _tf_step(self, forward, variables, x, r, mode, tf):
        variables = list(variables)

        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out, losses = forward(x)
                loss = _total(out, r, losses)
            return loss, tape.gradient(loss, [x, *variables])

        fn = tf.function(step, jit_compile=(mode == "xla"), reduce_retracing=False)
        return lambda: fn(x)

    def block(self, result):
        if self.backend == "tensorflow":
            return result[0].numpy()  # TF runs functions synchronously on CPU; this also syncs a GPU
        import jax

        jax.block_until_ready(result)
        return None


def _total(out, r, losses):
    from keras import ops

    loss = ops.sum(ops.cast(out, "float32") * r)
    for extra in losses:
        loss = loss + ops.cast(extra, "float32")
    return loss


# ------------------------------------------------------------------------------------------- timing


def time_calls(runner, fn, iters):
    start = time.perf_counter()
    for _ in range(iters):
        result = fn()
    runner.block(result)
    return (time.perf_counter() - start) / iters


def calibrate(runner, fn, min_time, warmup):
    runner.block(fn())  # compile
    for _ in range(warmup):
        runner.block(fn())
    t = time_calls(runner, fn, 3)
    return max(3, math.ceil(min_time / max(t, 1e-7)))


def median_iqr(values):
    values = sorted(values)
    med = statistics.median(values)
    if len(values) < 4:
        return med, values[0], values[-1]
    q1, _, q3 = statistics.quantiles(values, n=4)
    return med, q1, q3


def bench_case(case, runner, args, rng):
    """Times every function of one op; returns {(row, mode): [seconds per repeat]}."""
    import keras

    from dab_keras import estimators

    keras.utils.set_random_seed(args.seed)
    x_np = rng.normal(size=case.shape).astype("float32")
    x = keras.ops.convert_to_tensor(x_np)

    functions = {}  # (row, mode) -> callable
    approximator = None
    weights = case.bare_weights()
    r = None
    for est_name in args.estimators:
        if est_name not in case.estimators:
            continue
        layer = case.make_layer(estimators.get(est_name))
        layer.build(case.shape)
        if r is None:  # one fixed random tensor per op, shared by every row
            out_shape = tuple(keras.ops.shape(layer(x, training=False)))
            r = keras.ops.convert_to_tensor(rng.normal(size=out_shape).astype("float32"))
        variants = ["custom_gradient"]
        if args.compare_bridge and est_name in ("straight_through", "dab"):
            variants.append("sub_stop_gradient")
        for mode in runner.modes:
            for variant in variants:
                row = est_name if variant == "custom_gradient" else f"{est_name} [hard + (s - sg(s))]"
                functions[(row, mode)] = runner.layer_step(layer, x, r, mode, variant)
        if est_name == "dab" and layer.approximator is not None:
            approximator = layer.approximator
            g_shape = tuple(keras.ops.shape(approximator(x)))
            r_g = keras.ops.convert_to_tensor(rng.normal(size=g_shape).astype("float32"))
            for mode in runner.modes:
                functions[("approximator alone", mode)] = runner.approximator_step(approximator, x, r_g, mode)
                functions[("approximator forward only", mode)] = runner.approximator_forward(approximator, x, mode)
    if r is None:
        return {}, {}
    for mode in runner.modes:
        functions[("baseline", mode)] = runner.bare_step(case.bare, weights, x, r, mode)

    iters = {}
    for key, fn in functions.items():
        iters[key] = calibrate(runner, fn, args.min_time, args.warmup)

    keys = list(functions)
    times = {key: [] for key in keys}
    for rep in range(args.repeats):
        shift = rep % len(keys)
        for key in keys[shift:] + keys[:shift]:
            times[key].append(time_calls(runner, functions[key], iters[key]))
    return times, iters


# ------------------------------------------------------------------------------------------- report


ROW_ORDER = ("baseline", "straight_through", "straight_through [hard + (s - sg(s))]", "relaxed", "dab",
             "dab [hard + (s - sg(s))]", "approximator alone", "approximator forward only")


def summarize(times, modes):
    """Per (row, mode): median ms, and median/IQR of the per-repeat ratio to the baseline."""
    summary = {}
    for (row, mode), ts in times.items():
        base = times[("baseline", mode)]
        ratios = [t / tb for t, tb in zip(ts, base)]
        summary[(row, mode)] = (statistics.median(ts) * 1e3, *median_iqr(ratios))
    return summary


def dab_overheads(times, modes):
    """Per mode: median and IQR over repeats of (DAB - baseline) / approximator alone, paired by repeat."""
    result = {}
    for mode in modes:
        for row in ("dab", "dab [hard + (s - sg(s))]"):
            if (row, mode) not in times or ("approximator alone", mode) not in times:
                continue
            ratios = [
                (td - tb) / ta
                for td, tb, ta in zip(times[(row, mode)], times[("baseline", mode)],
                                      times[("approximator alone", mode)])
            ]
            tmin = [min(times[(k, mode)]) for k in (row, "baseline", "approximator alone")]
            result[(row, mode)] = (*median_iqr(ratios), (tmin[0] - tmin[1]) / tmin[2])
    return result


def mode_title(backend, mode):
    return {"graph": "TF graph", "xla": "TF XLA", "jit": "JAX jit"}[mode]


def format_tables(results, runner, args, header):
    md = args.markdown
    lines = []
    modes = runner.modes
    titles = [mode_title(runner.backend, m) for m in modes]

    def table(head, rows):
        if md:
            out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            out += ["| " + " | ".join(r) + " |" for r in rows]
            return out
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
        out.append("  ".join("-" * w for w in widths))
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        return out

    lines += header
    head = ["op", "shape", "estimator"]
    for t in titles:
        head += [f"{t} ms", f"{t} x baseline [IQR]"]
    rows = []
    notes = []
    for case, (times, _) in results:
        if not times:
            continue
        summary = summarize(times, modes)
        present = {row for row, _ in times}
        for row in ROW_ORDER:
            if row not in present:
                continue
            cells = [case.label, "x".join(str(d) for d in case.shape), row]
            for mode in modes:
                ms, med, q1, q3 = summary[(row, mode)]
                cells.append(f"{ms:.3f}")
                cells.append("1" if row == "baseline" else f"{med:.2f} [{q1:.2f}-{q3:.2f}]")
            rows.append(cells)
        if case.note:
            notes.append(f"{case.label}: {case.note}.")
    lines.append("")
    lines.append("Forward+backward time per batch (median over repeats) and ratio to the bare baseline "
                 "x + stop_gradient(hard(x) - x):")
    lines.append("")
    lines += table(head, rows)
    if notes:
        lines.append("")
        lines += [("- " if md else "  * ") + n for n in notes]

    head = ["op", "mode", "DAB ms", "baseline ms", "approximator alone ms", "approximator forward ms",
            "DAB overhead / approximator [IQR]", "same, from minima", "target <= 1"]
    rows = []
    for case, (times, _) in results:
        if not times:
            continue
        summary = summarize(times, modes)
        for (row, mode), (med, q1, q3, from_min) in dab_overheads(times, modes).items():
            label = case.label if row == "dab" else f"{case.label} {row[4:]}"
            rows.append([
                label, mode_title(runner.backend, mode), f"{summary[(row, mode)][0]:.3f}",
                f"{summary[('baseline', mode)][0]:.3f}", f"{summary[('approximator alone', mode)][0]:.3f}",
                f"{summary[('approximator forward only', mode)][0]:.3f}",
                f"{med:.2f} [{q1:.2f}-{q3:.2f}]", f"{from_min:.2f}", "pass" if med <= 1.0 else "FAIL",
            ])
    if rows:
        lines.append("")
        lines.append("DAB overhead = (DAB time - baseline time) / approximator's own forward+backward time:")
        lines.append("")
        lines += table(head, rows)

    head = ["op", "surrogate", "mode", "straight-through x baseline [IQR]", "same, from minima",
            "ST / (baseline + relaxed)", "target <= 1.1"]
    rows = []
    for case, (times, _) in results:
        if not times:
            continue
        summary = summarize(times, modes)
        for row in ("straight_through", "straight_through [hard + (s - sg(s))]"):
            for mode in modes:
                if (row, mode) not in summary:
                    continue
                _, med, q1, q3 = summary[(row, mode)]
                from_min = min(times[(row, mode)]) / min(times[("baseline", mode)])
                label = case.label if row == "straight_through" else f"{case.label} {row[17:]}"
                bound = "-"
                if case.surrogate == "relaxation" and ("relaxed", mode) in times:
                    ratios = [t / (tb + tr) for t, tb, tr in zip(
                        times[(row, mode)], times[("baseline", mode)], times[("relaxed", mode)])]
                    bound = f"{statistics.median(ratios):.2f}"
                rows.append([label, case.surrogate, mode_title(runner.backend, mode),
                             f"{med:.2f} [{q1:.2f}-{q3:.2f}]", f"{from_min:.2f}", bound,
                             "pass" if med <= 1.1 else "FAIL"])
    if rows:
        lines.append("")
        lines.append("Straight-through target (ST / (baseline + relaxed): the straight-through time over the "
                     "hard op's plus the relaxation's own forward+backward, for ops whose surrogate is the "
                     "relaxation; near or below 1 means the bridge adds nothing beyond computing the "
                     "surrogate):")
        lines.append("")
        lines += table(head, rows)
    return lines


def machine_header(backend, args):
    import keras

    cpu = "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    versions = [f"Python {platform.python_version()}", f"Keras {keras.__version__}"]
    if backend == "tensorflow":
        import tensorflow as tf

        versions.append(f"TensorFlow {tf.__version__}")
    else:
        import jax

        versions.append(f"JAX {jax.__version__} ({jax.default_backend()})")
    load = ""
    with contextlib.suppress(OSError):
        load = " load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    b, n, ns = args.batch, args.n, args.sort_n
    lines = [
        f"backend {backend}; {cpu}, {os.cpu_count()} logical CPUs;{load}; {', '.join(versions)}",
        f"shapes: batch {b} x n {n} (Sort: batch {b} x n {ns}); float32; repeats {args.repeats} x "
        f">= {args.min_time:.2f} s each, interleaved",
    ]
    if args.backend_note:
        lines.append(f"note: {args.backend_note}")
    # Two trailing spaces: a Markdown line break.
    return [line + ("  " if args.markdown else "") for line in lines]


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        sys.exit(f"benchmarks/ops.py supports the tensorflow and jax backends; KERAS_BACKEND={backend}")
    runner = Runner(backend, args)
    rng = np.random.default_rng(args.seed)
    if args.compare_bridge:
        check_bridge_replacement()
    cases = build_cases(args)
    started = time.perf_counter()
    results = []
    for case in cases:
        t0 = time.perf_counter()
        results.append((case, bench_case(case, runner, args, rng)))
        print(f"# {case.label}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    header = machine_header(backend, args)
    print("\n".join(format_tables(results, runner, args, header)))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
