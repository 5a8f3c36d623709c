"""The study harness (`benchmarks/study`): interval math, resume, table writer, tasks, gradient diagnostic."""

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.study import estimators as study_estimators  # noqa: E402
from benchmarks.study import gradient_quality as gq  # noqa: E402
from benchmarks.study import report, results, runner, stats, tasks  # noqa: E402

scipy_stats = pytest.importorskip("scipy.stats")


# ----------------------------------------------------------------------------------- interval math
@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 29, 200])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_matches_scipy(df, p):
    assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-9)
    assert stats.t_quantile(1 - p, df) == pytest.approx(scipy_stats.t.ppf(1 - p, df), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("values", [[0.90, 0.92, 0.97], [0.1, 0.5], np.linspace(0.2, 0.9, 7)])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_mean_interval_matches_scipy(values, confidence):
    mean, half, n = stats.mean_interval(values, confidence)
    lo, hi = scipy_stats.t.interval(confidence, len(values) - 1, loc=np.mean(values),
                                    scale=scipy_stats.sem(values))
    assert n == len(values)
    assert mean == pytest.approx(np.mean(values))
    assert mean - half == pytest.approx(lo, rel=1e-9)
    assert mean + half == pytest.approx(hi, rel=1e-9)


def test_mean_interval_one_seed_and_errors():
    mean, half, n = stats.mean_interval([0.5])
    assert (mean, n) == (0.5, 1) and math.isnan(half)
    with pytest.raises(ValueError, match="values"):
        stats.mean_interval([])
    with pytest.raises(ValueError, match=r"confidence.*Received: confidence=1.5"):
        stats.mean_interval([1.0, 2.0], 1.5)


# ----------------------------------------------------------------------------------- resume and tables
def _fake_task():
    task = tasks.Task(name="fake_task", description="a fake", build=None, data=lambda path: {"path": path},
                      batch_size=4, metric="test accuracy", evaluate=None)
    return task


@pytest.fixture
def fake_table(monkeypatch):
    task = _fake_task()
    monkeypatch.setitem(tasks.TASKS, task.name, task)
    return tasks.Table(name="fake", description="Fake table", tasks=(task.name,),
                       estimators=("straight_through", "dab"), seeds=2, steps=(10, 20))


class _FakeTrain:
    """Records its calls; the metric of a cell is a function of (estimator, seed, step)."""

    def __init__(self):
        self.calls = []

    def __call__(self, task, estimator, seed, steps, data, curve_every=25, log=None):
        self.calls.append((estimator, seed, tuple(steps)))
        base = {"straight_through": 0.5, "dab": 0.7}[estimator]
        evaluations = {s: (base + 0.01 * seed + 0.001 * s, 0.1 * s) for s in steps}
        curve = [[s, 1.0 / s, 0.5] for s in range(5, max(steps) + 1, 5)]
        return evaluations, curve


def test_resume_runs_only_missing_cells(tmp_path, fake_table):
    out = str(tmp_path / "study")
    train = _FakeTrain()
    records = runner.run_table(fake_table, out, train=train)
    assert sorted(train.calls) == [("dab", 0, (10, 20)), ("dab", 1, (10, 20)),
                                   ("straight_through", 0, (10, 20)), ("straight_through", 1, (10, 20))]
    assert len(records) == 8

    # without --resume an existing study is refused
    with pytest.raises(ValueError, match="--resume"):
        runner.run_table(fake_table, out, train=_FakeTrain())

    # nothing missing: nothing trained
    again = _FakeTrain()
    runner.run_table(fake_table, out, resume=True, train=again)
    assert again.calls == []

    # a new budget and a new seed: only those cells run; finished cells are not repeated
    more = _FakeTrain()
    records = runner.run_table(fake_table, out, seeds=3, steps=(10, 20, 40), resume=True, train=more)
    assert sorted(more.calls) == [("dab", 0, (40,)), ("dab", 1, (40,)), ("dab", 2, (10, 20, 40)),
                                  ("straight_through", 0, (40,)), ("straight_through", 1, (40,)),
                                  ("straight_through", 2, (10, 20, 40))]
    on_disk = results.read(os.path.join(out, "results.jsonl"))
    assert len(on_disk) == 2 * 3 * 3 == len(records)
    cell = on_disk[("fake_task", "dab", 2, 20)]
    assert cell["value"] == pytest.approx(0.7 + 0.02 + 0.02)
    assert [p[0] for p in cell["curve"]] == [5, 10, 15, 20]  # the curve up to that budget only


def test_held_out_split_trains_on_all_but_the_last_examples_and_is_recorded(tmp_path, monkeypatch):
    n = tasks.HELD_OUT + 7
    arrays = {"x_train": np.arange(n).reshape(n, 1), "y_train": np.arange(n) % 10,
              "x_test": np.full((3, 1), -1), "y_test": np.zeros(3, "int64")}
    task = tasks.Task(name="fake_arrays", description="fake", build=None, data=lambda path: arrays, batch_size=4,
                      metric="test accuracy", evaluate=None)
    monkeypatch.setitem(tasks.TASKS, task.name, task)
    table = tasks.Table(name="fake_arrays", description="Fake", tasks=(task.name,), estimators=("dab",), seeds=1,
                        steps=(10,))
    seen = []

    def train(task, estimator, seed, steps, data, curve_every=25, log=None):
        seen.append(data)
        return {s: (0.5, 1.0) for s in steps}, [[s, 1.0, 0.5] for s in steps]

    out = str(tmp_path / "screen")
    records = runner.run_table(table, out, split="held_out", train=train)
    (data,) = seen
    np.testing.assert_array_equal(data["x_train"][:, 0], np.arange(7))  # the test split is never given
    np.testing.assert_array_equal(data["x_test"][:, 0], np.arange(7, n))
    assert [r["split"] for r in records.values()] == ["held_out"]
    markdown = report.write_report(records, table, out, ("dab",), (10,))
    assert "held-out accuracy (%) @ 10 steps" in markdown and "test accuracy" not in markdown
    with pytest.raises(ValueError, match="'held_out' split"):  # one split per results file
        runner.run_table(table, out, split="test", resume=True, train=train)
    with pytest.raises(ValueError, match="`split` must be one of"):
        runner.run_table(table, str(tmp_path / "other"), split="validation", train=train)
    # a task whose test data are prepared apart (the VAEs' fixed binarization) has no held-out split
    assert not tasks.TASKS["vae_categorical"].held_out
    with pytest.raises(ValueError, match="has no held-out split"):
        runner.run_table(tasks.get_table("vae"), str(tmp_path / "vae"), split="held_out", train=train)


def test_shards_run_every_cell_exactly_once(tmp_path, fake_table):
    shards = []
    for index in range(3):
        train = _FakeTrain()
        runner.run_table(fake_table, str(tmp_path / f"shard{index}"), seeds=4, shard=(index, 3), train=train)
        shards.append({(e, s) for e, s, _ in train.calls})
    cells = {(e, s) for e in ("straight_through", "dab") for s in range(4)}
    assert set.union(*shards) == cells and sum(len(c) for c in shards) == len(cells)
    assert all(shards)  # 8 cells over 3 shards: each gets some
    merged = {}
    for index in range(3):
        merged.update(results.read(str(tmp_path / f"shard{index}" / "results.jsonl")))
    assert len(merged) == len(cells) * 2  # two budgets per cell
    for bad in ((3, 3), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="`shard` must be"):
            runner.run_table(fake_table, str(tmp_path / "bad"), shard=bad, train=_FakeTrain())


def test_results_reader_skips_a_cut_line_and_keeps_the_last_record(tmp_path):
    path = str(tmp_path / "r.jsonl")
    first = {"task": "t", "estimator": "dab", "seed": 0, "steps": 10, "value": 0.1}
    results.append(path, first)
    results.append(path, {**first, "value": 0.2})
    with open(path, "a") as f:
        f.write('{"task": "t", "estimator": "dab", "se')  # an interrupted write
    records = results.read(path)
    assert list(records) == [("t", "dab", 0, 10)] and records[("t", "dab", 0, 10)]["value"] == 0.2
    assert results.missing_steps(records, "t", "dab", 0, (20, 10, 5)) == [5, 20]
    with pytest.raises(ValueError, match="seed"):
        results.append(path, {"task": "t", "estimator": "dab", "steps": 1})


def test_table_writer_cells_and_plots(tmp_path, fake_table):
    out = str(tmp_path / "study")
    records = runner.run_table(fake_table, out, seeds=3, train=_FakeTrain())
    markdown = report.write_report(records, fake_table, out, ("straight_through", "dab"), (10, 20, 40))
    lines = markdown.splitlines()
    row = next(line for line in lines if line.startswith("| fake_task | dab |"))
    values = [0.7 + 0.01 * seed + 0.001 * 20 for seed in range(3)]
    half = scipy_stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"{100 * np.mean(values):.1f} ± {100 * half:.1f} (n=3)"
    assert cells[4] == "—"  # no 40-step results
    assert "test accuracy (%) @ 10 steps" in lines[2]
    assert os.path.getsize(os.path.join(out, "table.md")) > 0
    with open(os.path.join(out, "curves_fake_task.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_table_header_names_the_tasks_metric(tmp_path, monkeypatch):
    task = tasks.Task(name="fake_sorting", description="a fake", build=None, data=lambda path: {}, batch_size=4,
                      metric="exact-permutation accuracy", evaluate=None, needs_data=False)
    monkeypatch.setitem(tasks.TASKS, task.name, task)
    table = tasks.Table(name="fake", description="Fake table", tasks=(task.name,),
                        estimators=("straight_through", "dab"), seeds=2, steps=(10,))
    out = str(tmp_path / "study")
    records = runner.run_table(table, out, train=_FakeTrain())
    markdown = report.write_report(records, table, out, table.estimators, table.steps)
    lines = markdown.splitlines()
    assert "| exact-permutation accuracy (%) @ 10 steps |" in lines[2]
    assert any("| Δ exact-permutation accuracy (points) @ 10 steps |" in line for line in lines)


def test_a_budget_inside_a_longer_run_equals_a_run_of_that_budget():
    rng = np.random.default_rng(0)
    data = {"x_train": rng.random((256, 784), dtype=np.float32), "y_train": rng.integers(0, 10, 256),
            "x_test": rng.random((50, 784), dtype=np.float32), "y_test": rng.integers(0, 10, 50)}
    task = tasks.TASKS["mnist_mlp_sign"]
    long_run, curve = runner.train_run(task, "straight_through", 1, [3, 6], data, curve_every=2)
    short_run, short_curve = runner.train_run(task, "straight_through", 1, [3], data, curve_every=2)
    assert long_run[3][0] == short_run[3][0]
    assert short_curve == curve[:2]  # same data order and initial weights: same losses to the float
    assert [point[0] for point in curve] == [2, 3, 5, 6]


def test_registry_has_the_layer_tables_and_refuses_unknown_names():
    assert tasks.get_table("everyday").tasks == ("mnist_mlp_sign",)
    assert {f"mnist_mlp_{n}" for n in ("sign", "quantize", "argmax", "topk", "sort", "vq")} <= set(
        tasks.get_table("layers").tasks)
    with pytest.raises(ValueError, match=r"Received: table='nope'"):
        tasks.get_table("nope")


def test_command_line_lists_tables_and_refuses_bad_arguments(tmp_path, capsys):
    from benchmarks.study.__main__ import main

    assert main(["list"]) == 0
    assert "everyday:" in capsys.readouterr().out
    assert main(["run", "nope", "--data", "x.npz"]) == 2
    assert "Received: table='nope'" in capsys.readouterr().err
    missing = str(tmp_path / "missing.npz")
    assert main(["run", "everyday", "--data", missing, "--out", str(tmp_path / "o")]) == 2
    assert f"Received: --data {missing}" in capsys.readouterr().err
    assert main(["run", "everyday", "--data", missing, "--estimators", "magic"]) == 2
    assert "Received: ['magic']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "everyday", "--data", missing, "--seeds", "0"])


def test_a_synthetic_table_runs_without_data_and_an_mnist_table_refuses_to(tmp_path, capsys, monkeypatch):
    from benchmarks.study.__main__ import main

    assert main(["run", "everyday", "--out", str(tmp_path / "e")]) == 2
    assert "Received: no --data" in capsys.readouterr().err
    paths = []
    real_run_table = runner.run_table

    def run_table(table, out, *args, data_path=None, **kwargs):
        paths.append(data_path)
        return real_run_table(table, out, *args, data_path=data_path, **{**kwargs, "train": _FakeTrain()})

    monkeypatch.setattr(runner, "run_table", run_table)
    out = str(tmp_path / "p")
    argv = ["run", "permutation", "--out", out, "--seeds", "2", "--steps", "10", "--estimators", "straight_through",
            "dab"]
    assert main(argv) == 0
    assert paths == [None]
    assert "| permutation_n10 | dab |" in capsys.readouterr().out
    assert len(results.read(os.path.join(out, "results.jsonl"))) == len(tasks.PERMUTATION_SIZES) * 2 * 2


# ----------------------------------------------------------------------------------- sort and permutation tasks
_gradient = gq.gradient  # the diagnostics' TensorFlow / JAX gradient


def test_identity_estimator_passes_the_upstream_gradient_unpermuted():
    import keras

    from dab_keras import layers

    x = np.array([[3.0, 1.0, 2.0]], "float32")
    weights = np.array([[1.0, 10.0, 100.0]], "float32")  # upstream gradient of the i-th sorted value
    identity = layers.Sort(estimator=tasks.make_estimator("identity"))
    assert isinstance(identity.estimator, study_estimators.IdentityStraightThrough)
    assert np.asarray(identity(x, training=True)).tolist() == [[1.0, 2.0, 3.0]]  # hard sort forward
    grad = _gradient(lambda t: keras.ops.sum(identity(t, training=True) * weights), x)
    np.testing.assert_array_equal(grad, [[1.0, 10.0, 100.0]])  # to the i-th input, not to the one sorted there
    # the true gradient of the sorted values: x_1 = 1 is first (weight 1), x_2 = 2 second (10), x_0 = 3 third (100)
    true_grad = _gradient(lambda t: keras.ops.sum(keras.ops.sort(t, axis=-1) * weights), x)
    np.testing.assert_array_equal(true_grad, [[100.0, 1.0, 10.0]])
    with pytest.raises(ValueError, match="shaped like the op's input"):
        layers.Sort(output_mode="permutation", estimator=study_estimators.IdentityStraightThrough())(
            x, training=True)


def test_exact_sort_gradient_is_the_gradient_of_the_sorted_values():
    import keras

    from dab_keras import layers

    x = np.array([[3.0, 1.0, 2.0], [0.5, -2.0, 4.0]], "float32")
    weights = np.array([[1.0, 10.0, 100.0]], "float32")
    for direction, expected in (("ascending", [[100.0, 1.0, 10.0], [10.0, 1.0, 100.0]]),
                                ("descending", [[1.0, 100.0, 10.0], [10.0, 100.0, 1.0]])):
        layer = layers.Sort(direction=direction, estimator=tasks.make_estimator("exact"))
        grad = _gradient(lambda t, layer=layer: keras.ops.sum(layer(t, training=True) * weights), x)
        np.testing.assert_array_equal(grad, expected)  # by hand: each input gets its sorted position's weight
    with pytest.raises(ValueError, match="output_mode='values'"):
        layers.Sort(output_mode="ranks", estimator=study_estimators.ExactSortGradient())(x, training=True)


def _fake_mnist(rng):
    return {"x_train": rng.random((256, 784), dtype=np.float32), "y_train": rng.integers(0, 10, 256),
            "x_test": rng.random((50, 784), dtype=np.float32), "y_test": rng.integers(0, 10, 50)}


def _small_permutation_data(items):
    x_train, y_train = tasks.permutation_data(256, 0, items)
    x_test, y_test = tasks.permutation_data(50, 1, items)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@pytest.mark.parametrize("table", ["sortnet", "permutation"])
def test_sort_tasks_train_a_few_steps_with_every_estimator(table):
    estimators = tasks.get_table(table).estimators
    assert set(estimators) >= {"straight_through", "relaxed", "dab", "dab_paper"}
    assert ("identity" in estimators) == ("exact" in estimators) == (table == "sortnet")
    for task_name in tasks.get_table(table).tasks:
        task = tasks.TASKS[task_name]
        if table == "sortnet":
            data = _fake_mnist(np.random.default_rng(0))
        else:
            data = _small_permutation_data(int(task_name.removeprefix("permutation_n")))
        for estimator in estimators:
            evaluations, curve = runner.train_run(task, estimator, 0, [2], data, curve_every=1)
            assert 0.0 <= evaluations[2][0][task.metric] <= 1.0
            assert len(curve) == 2 and all(np.isfinite(point[1]) for point in curve)


def test_permutation_metric_is_one_for_a_model_scoring_by_the_true_keys():
    import keras

    from dab_keras import layers

    _, keys = tasks.permutation_data(200, seed=5)
    oracle = keras.Sequential([keras.Input((keys.shape[1],)), layers.Sort(output_mode="permutation")])
    task = tasks.TASKS["permutation_n10"]
    assert task.evaluate(oracle, {"x_test": keys, "y_test": keys}) == 1.0
    assert task.evaluate(oracle, {"x_test": -keys, "y_test": keys}) == 0.0  # sorts descending
    swapped = keys.copy()
    swapped[:50, [0, 1]] = swapped[:50, [1, 0]]  # the first 50 sequences scored with two keys exchanged
    assert task.evaluate(oracle, {"x_test": swapped, "y_test": keys}) == 150 / 200
    # the training loss and accuracy of a Keras fit agree: zero loss and accuracy 1 for the right permutation
    perfect = oracle.predict(keys, verbose=0)
    assert np.asarray(tasks._sorting_loss(keys, perfect)).max() == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_array_equal(np.asarray(tasks._exact_permutation(keys, perfect)), 1.0)
    # the loss of one exchanged pair: two positions off by the keys' gap, over n positions
    wrong = oracle.predict(swapped[:1], verbose=0)
    gap = abs(keys[0, 0] - keys[0, 1])
    assert float(tasks._sorting_loss(keys[:1], wrong)[0]) == pytest.approx(2 * gap**2 / keys.shape[1], rel=1e-5)


def test_known_map_reference_sorts_noiseless_features_and_less_with_noise():
    x, keys = tasks.permutation_data(40, 7, 5, noise=0.0)
    keys = np.round(keys * 4000) / 4000  # keys on the decoder's grid: exact recovery
    x = np.sin(keys[..., None] * tasks.permutation_feature_map()[0] + tasks.permutation_feature_map()[1])
    assert tasks.known_map_accuracy(x.astype("float32"), keys) == (1.0, 1.0)
    noisy, noisy_keys = tasks.permutation_data(200, 7, 20, noise=0.5)
    exact, per_position = tasks.known_map_accuracy(noisy, noisy_keys)
    assert exact < per_position < 1.0


def test_permutation_data_is_deterministic_in_its_seed():
    x, keys = tasks.permutation_data(7, seed=3)
    x_again, keys_again = tasks.permutation_data(7, seed=3)
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_array_equal(keys, keys_again)
    x_other, keys_other = tasks.permutation_data(7, seed=4)
    assert not np.array_equal(keys, keys_other) and not np.array_equal(x, x_other)
    assert x.shape == (7, tasks.PERMUTATION_ITEMS, tasks.PERMUTATION_FEATURES) and x.dtype == np.float32
    assert keys.shape == (7, tasks.PERMUTATION_ITEMS) and keys.min() >= 0.0 and keys.max() <= 1.0
    # features are the fixed map of the keys plus noise of the stated size
    a, b = tasks.permutation_feature_map()
    residual = x - np.sin(keys[..., None] * a + b)
    assert 0.5 * tasks.PERMUTATION_NOISE < residual.std() < 1.5 * tasks.PERMUTATION_NOISE
    train, test = tasks.PERMUTATION_DATA_SEEDS["train"], tasks.PERMUTATION_DATA_SEEDS["test"]
    assert train != test


# ----------------------------------------------------------------------------------- gradient diagnostic
@pytest.mark.parametrize("latent", ["binary", "categorical"])
def test_exact_gradient_matches_finite_differences(latent):
    problem = gq.make_problem(latents=3, observed=5, points=4, seed=1, latent=latent, categories=3)
    grad_r, grad_kl = gq.exact_gradients(problem)
    analytic = grad_r - grad_kl
    assert analytic.shape == problem["logits"].shape
    eps = 1e-6
    numeric = np.zeros_like(analytic)
    for index in np.ndindex(*analytic.shape):
        plus, minus = problem["logits"].copy(), problem["logits"].copy()
        plus[index] += eps
        minus[index] -= eps
        numeric[index] = (gq.elbo(problem, plus)[index[0]] - gq.elbo(problem, minus)[index[0]]) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)
    # the enumerated ELBO is a lower bound of the exact log-likelihood, also enumerated
    zs = gq.configurations(3, 3 if latent == "categorical" else None)
    assert len(zs) == (27 if latent == "categorical" else 8)
    flat = zs.reshape(len(zs), -1)
    log_px = np.log(np.mean(np.exp(gq.log_likelihood(problem["x"][:, None], flat[None], problem["W"],
                                                     problem["c"])), axis=1))
    assert np.all(gq.elbo(problem) <= log_px + 1e-12)


def test_categorical_configurations_are_every_one_hot_assignment_once():
    zs = gq.configurations(2, 3)
    assert zs.shape == (9, 2, 3)
    np.testing.assert_array_equal(zs.sum(axis=-1), np.ones((9, 2)))
    assert len({tuple(z.argmax(axis=-1)) for z in zs}) == 9


@pytest.mark.parametrize("latent", ["binary", "categorical"])
def test_reinforce_leave_one_out_is_unbiased(latent):
    problem = gq.make_problem(latents=3, observed=6, points=3, seed=2, latent=latent, categories=3)
    grad_r, _ = gq.exact_gradients(problem)
    estimates = gq.reinforce_loo(problem, estimates=4000, samples=4, seed=3)
    mean = estimates.mean(axis=0)
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    z = (mean - grad_r) / standard_error
    assert np.max(np.abs(z)) < 4.6  # 9 (binary) or 27 (categorical) components
    # the check has power: a baseline that includes the own sample scales the mean by (m - 1) / m
    biased = 0.75 * estimates
    assert np.max(np.abs((biased.mean(axis=0) - grad_r) / standard_error)) > 4.6
    assert gq.summarize(estimates, grad_r, grad_r * 0)["relative_bias"] < 0.1


def test_straight_through_pathwise_gradient_is_the_decoder_gradient_at_the_sample():
    from dab_keras import layers

    problem = gq.make_problem(latents=3, observed=5, points=4, seed=4)
    estimates = gq.pathwise(problem, layers.Sign(estimator="straight_through"), estimates=5, seed=0)
    # the same noise, by hand: z = sign(l + noise), d log p(x|z)/dz = W^T (x - sigmoid(W z + c))
    rng = np.random.default_rng(0)
    a = np.tile(problem["logits"], (5, 1)) + gq.logistic_noise((20, 3), rng)
    z = np.where(a >= 0, 1.0, -1.0)
    x = np.tile(problem["x"], (5, 1))
    expected = (x - 1 / (1 + np.exp(-(z @ problem["W"].T + problem["c"])))) @ problem["W"]
    np.testing.assert_allclose(estimates.reshape(20, 3), expected, rtol=1e-4, atol=1e-4)


def test_categorical_straight_through_is_the_softmax_vjp_of_the_decoder_gradient_at_the_sample():
    from dab_keras import layers

    problem = gq.make_problem(latents=2, observed=5, points=4, seed=5, latent="categorical", categories=3)
    estimates = gq.pathwise(problem, layers.ArgMax(axis=-1, estimator="straight_through"), estimates=5, seed=0)
    assert estimates.shape == (5, 4, 2, 3)
    # by hand: a = l + Gumbel noise, z = onehot(argmax a); the straight-through surrogate is softmax(a) (τ = 1)
    rng = np.random.default_rng(0)
    a = np.tile(problem["logits"], (5, 1, 1)) + gq.gumbel_noise((20, 2, 3), rng)
    z = np.eye(3)[a.argmax(-1)].reshape(20, -1)
    x = np.tile(problem["x"], (5, 1))
    u = ((x - 1 / (1 + np.exp(-(z @ problem["W"].T + problem["c"])))) @ problem["W"]).reshape(20, 2, 3)
    p = np.exp(a - a.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = p * (u - np.sum(p * u, axis=-1, keepdims=True))
    np.testing.assert_allclose(estimates.reshape(20, 2, 3), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("latent", ["binary", "categorical"])
def test_straight_through_mean_is_the_gradient_through_the_noise_free_mean(latent):
    import tensorflow as tf

    problem = gq.make_problem(latents=2, observed=5, points=3, seed=6, latent=latent, categories=3)
    estimates = gq.straight_through_mean(problem, estimates=4, seed=1)
    assert estimates.shape == (4,) + problem["logits"].shape
    # the same samples, by autodiff of f(z + m(l) - stop_gradient(m(l))) with m(l) = E[z | l]
    rng = np.random.default_rng(1)
    logits = problem["logits"]
    noise = gq.gumbel_noise if latent == "categorical" else gq.logistic_noise
    a = (np.tile(logits, (4,) + (1,) * (logits.ndim - 1)) + noise((12,) + logits.shape[1:], rng)).reshape(
        (4,) + logits.shape)
    z = np.eye(3)[a.argmax(-1)] if latent == "categorical" else np.where(a >= 0, 1.0, -1.0)
    lt = tf.constant(np.broadcast_to(logits, a.shape))
    with tf.GradientTape() as tape:
        tape.watch(lt)
        mean = tf.nn.softmax(lt, axis=-1) if latent == "categorical" else 2 * tf.sigmoid(lt) - 1
        zs = tf.reshape(z + mean - tf.stop_gradient(mean), (4, 3, -1))
        eta = tf.matmul(zs, problem["W"].T) + problem["c"]
        value = tf.reduce_sum(problem["x"] * eta - tf.nn.softplus(eta))
    np.testing.assert_allclose(estimates, tape.gradient(value, lt).numpy(), rtol=1e-10, atol=1e-12)


def test_gradient_diagnostic_refuses_unknown_latents():
    with pytest.raises(ValueError, match="`latent` must be one of"):
        gq.make_problem(latent="gaussian")


def test_diagnostic_table_printer():
    rows = [{"estimator": "straight_through", "evaluations": 1, "bias_norm": 1.23456, "relative_bias": 0.5,
             "mc_floor": 0.1, "variance": 12.0, "cos_mean": 0.9, "cos_single": 0.5, "cos_single_elbo": 0.6}]
    lines = gq.table_markdown(rows).splitlines()
    assert lines[0].startswith("| estimator | decoder evals / estimate | ‖bias‖")
    assert lines[2] == "| straight_through | 1 | 1.235 | 0.5 | 0.1 | 12 | 0.9 | 0.5 | 0.6 |"


def test_paired_differences_subtract_the_reference_seed_by_seed():
    def record(estimator, seed, value, steps=10):
        return {"task": "t", "estimator": estimator, "seed": seed, "steps": steps, "value": value}

    rows = [record("straight_through", s, v) for s, v in enumerate([0.80, 0.90, 0.70])]
    rows += [record("dab", s, v) for s, v in [(0, 0.81), (1, 0.92), (2, 0.72), (3, 0.99)]]  # seed 3 unpaired
    records = {(r["task"], r["estimator"], r["seed"], r["steps"]): r for r in rows}
    diffs = report.paired_differences(records, "t", "dab", "straight_through", 10)
    np.testing.assert_allclose(diffs, [0.01, 0.02, 0.02])
    line = report.paired_markdown(records, ["t"], ["straight_through", "dab"], [10, 20]).splitlines()[2]
    half = scipy_stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "dab − straight_through"
    assert cells[2] == f"{100 * np.mean(diffs):+.1f} ± {100 * half:.1f} (n=3)"
    assert cells[3] == "—"
    assert report.paired_markdown(records, ["t"], ["dab"], [10], reference="relaxed") == ""


# ----------------------------------------------------------------------------------- screened DAB candidates
def _sign_with(estimator, x, correction=True):
    from dab_keras import layers

    layer = layers.Sign(estimator=estimator)
    layer(x, training=True)  # builds the layer and its approximator (its correction starts at 0)
    if correction:
        head = layer.estimator_state.approximator.head
        rng = np.random.default_rng(3)
        head.kernel.assign(rng.normal(0.0, 0.5, head.kernel.shape).astype("float32"))  # a non-zero correction
        head.bias.assign(np.array([0.2], "float32"))
    return layer


def _correction_and_slope(layer, x):
    """c(x) and c'(x) of a Sign layer's element-wise correction, by autodiff of the network alone."""
    import keras

    approximator = layer.estimator_state.approximator
    c = keras.ops.convert_to_numpy(approximator(x))
    slope = _gradient(lambda t: keras.ops.sum(approximator(t)), x)
    return c, slope


def test_shrunk_dab_weights_the_correction_by_its_least_squares_fit():
    import keras

    x = np.linspace(-1.0, 1.0, 24, dtype="float32").reshape(3, 8)
    layer = _sign_with(tasks.make_estimator("dab_shrink"), x, correction=False)
    assert isinstance(layer.estimator, study_estimators.ShrunkDAB)
    # c(x) = 2 tanh(3x): the right sign of h - s = sign(x) - x on [-1, 1], about twice too large
    network = layer.estimator_state.approximator
    hidden, head = network.hidden[0], network.head
    hidden.kernel.assign(np.eye(1, hidden.kernel.shape[1], dtype="float32") * 3.0)
    hidden.bias.assign(np.zeros(hidden.bias.shape, "float32"))
    head.kernel.assign(np.eye(head.kernel.shape[0], 1, dtype="float32") * 2.0)
    c, slope = _correction_and_slope(layer, x)
    residual = np.sign(x) - x  # h - s, the identity's error
    alpha = float(np.clip(np.sum(residual * c) / np.sum(c * c), 0.0, 1.0))
    assert 0.0 < alpha < 1.0  # the test exercises the shrinkage, not a clip
    with pytest.raises(ValueError, match="needs residual=True"):
        study_estimators.ShrunkDAB(residual=False)
    weights = np.arange(1.0, 25.0, dtype="float32").reshape(3, 8)
    grad = _gradient(lambda t: keras.ops.sum(layer(t, training=True) * weights), x)
    np.testing.assert_allclose(grad, weights * (1.0 + alpha * slope), rtol=1e-4)  # J of s + alpha c


def test_gain_matched_dab_keeps_the_bridge_direction_at_straight_through_size():
    import keras

    x = np.linspace(-2.0, 2.0, 64, dtype="float32").reshape(4, 16)
    fresh = _sign_with(tasks.make_estimator("dab_gain"), x, correction=False)
    grad = _gradient(lambda t: keras.ops.sum(fresh(t, training=True)), x)
    np.testing.assert_allclose(grad, np.ones_like(x), rtol=1e-5)  # correction at 0: straight-through exactly
    layer = _sign_with(tasks.make_estimator("dab_gain"), x)
    assert isinstance(layer.estimator, study_estimators.GainMatchedDAB)
    _, slope = _correction_and_slope(layer, x)
    bridge_slope = 1.0 + slope  # g = x + c: the residual DAB's diagonal Jacobian
    grad = _gradient(lambda t: keras.ops.sum(layer(t, training=True)), x)
    ratio = grad / bridge_slope  # one scale for the whole batch
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-3)
    # the scale is ||J_s r|| / ||J_g r|| for a random r: between the extremes of 1 / |g'|
    assert 1.0 / np.abs(bridge_slope).max() - 1e-3 <= ratio.flat[0] <= 1.0 / np.abs(bridge_slope).min() + 1e-3
    assert abs(ratio.flat[0] - 1.0) > 1e-2  # the non-zero correction changes the gain, and it is undone


def test_smoothed_target_dab_fits_the_gaussian_smoothing_of_the_op():
    import math

    import keras

    from dab_keras import layers

    keras.utils.set_random_seed(0)
    estimator = tasks.make_estimator("dab_smooth1")
    assert isinstance(estimator, study_estimators.SmoothedTargetDAB) and estimator.noise == 1.0
    sign = layers.Sign(estimator=estimator)
    inputs = keras.Input((256,))
    model = keras.Model(inputs, sign(inputs))
    # the task loss is 0: only the DAB loss trains the correction c (g = x + c)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=lambda y, p: 0.0 * keras.ops.mean(p))
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (64 * 256, 256)).astype("float32")
    model.fit(x, x, batch_size=256, epochs=3, verbose=0)
    grid = np.linspace(-1.0, 1.0, 256, dtype="float32")[None]
    g = keras.ops.convert_to_numpy(sign.estimator.approximate(sign, keras.ops.convert_to_tensor(grid),
                                                              sign.estimator_state))[0]
    sigma = 1.0 / math.sqrt(3.0)  # kappa * rms of U(-1, 1)
    smoothed = np.array([math.erf(v / (sigma * math.sqrt(2.0))) for v in grid[0]])  # E sign(x + sigma eps)
    assert np.abs(g - smoothed).max() < 0.1  # the least-squares limit: the smoothing, not the step
    assert np.abs(g - np.sign(grid[0])).max() > 0.5
    with pytest.raises(ValueError, match="`noise` must be a number > 0"):
        study_estimators.SmoothedTargetDAB(noise=0.0)


def test_warmup_dab_blends_the_correction_in_linearly_over_its_steps():
    import keras

    x = np.linspace(-1.0, 1.0, 24, dtype="float32").reshape(3, 8)
    weights = np.arange(1.0, 25.0, dtype="float32").reshape(3, 8)
    layer = _sign_with(study_estimators.WarmupDAB(warmup_steps=4), x)
    state = layer.estimator_state
    state.approximator.trainable = False  # the correction stays as set: no DAB loss moves it
    _, slope = _correction_and_slope(layer, x)
    assert np.abs(slope).max() > 0.1  # a correction whose weight the gradient can show
    state.warmup_step.assign(0.0)
    for step in range(7):
        grad = _gradient(lambda t: keras.ops.sum(layer(t, training=True) * weights), x)
        # J of s + w_t c with w_t = min(1, t / T): straight-through at step 0, the residual DAB from step T
        np.testing.assert_allclose(grad, weights * (1.0 + min(1.0, step / 4) * slope), rtol=1e-5, atol=1e-5)
    assert float(keras.ops.convert_to_numpy(state.warmup_step)) == 7.0
    np.asarray(layer(x, training=False))  # inference: no step counted
    assert float(keras.ops.convert_to_numpy(state.warmup_step)) == 7.0
    with pytest.raises(ValueError, match="`warmup_steps` must be an integer >= 1"):
        study_estimators.WarmupDAB(warmup_steps=0)


def test_warmup_dab_counts_the_steps_of_a_compiled_fit_and_saves_its_count(tmp_path):
    import keras

    from dab_keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    sign = layers.Sign(estimator=tasks.make_estimator("dab_warmup"))
    model = keras.Model(inputs, keras.layers.Dense(1)(sign(keras.layers.Dense(8)(inputs))))
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    x = np.random.default_rng(0).normal(size=(96, 8)).astype("float32")
    model.fit(x, x[:, :1], batch_size=16, epochs=2, verbose=0)  # 12 steps
    model.evaluate(x, x[:, :1], batch_size=16, verbose=0)
    assert float(keras.ops.convert_to_numpy(sign.estimator_state.warmup_step)) == 12.0
    assert sign.estimator.warmup_steps == 1000
    path = str(tmp_path / "warmup.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_sign = next(lay for lay in loaded.layers if isinstance(lay, layers.Sign))
    assert isinstance(loaded_sign.estimator, study_estimators.WarmupDAB)
    assert float(keras.ops.convert_to_numpy(loaded_sign.estimator_state.warmup_step)) == 12.0


def _argmax_with(estimator, logits, noise):
    from dab_keras import layers

    layer = layers.ArgMax(estimator=estimator)
    layer(logits, noise=noise, training=True)  # builds the layer and its approximator (the correction is 0)
    head = layer.estimator_state.approximator.head
    rng = np.random.default_rng(5)
    head.kernel.assign(rng.normal(0.0, 0.5, head.kernel.shape).astype("float32"))  # a non-zero correction
    head.bias.assign(rng.normal(0.0, 0.2, head.bias.shape).astype("float32"))
    return layer


def test_mean_fitted_dab_bridges_the_sample_through_its_relaxation_and_a_correction_of_the_logits():
    import keras

    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 1.5, (3, 4)).astype("float32")
    noises = [-np.log(-np.log(rng.uniform(1e-6, 1.0, (3, 4)))).astype("float32") for _ in range(2)]
    weights = rng.normal(0.0, 1.0, (3, 4)).astype("float32")
    layer = _argmax_with(tasks.make_estimator("dab_mean"), logits, noises[0])
    assert isinstance(layer.estimator, study_estimators.MeanFittedDAB)
    approximator = layer.estimator_state.approximator
    correction_grad = _gradient(lambda t: keras.ops.sum(approximator(t) * weights), logits)
    assert np.abs(correction_grad).max() > 0.05  # a correction whose gradient the bridge can show
    for noise in noises:
        out = np.asarray(layer(logits, noise=noise, training=True))
        np.testing.assert_array_equal(out, np.eye(4)[np.argmax(logits + noise, axis=-1)])  # the hard sample
        grad = _gradient(lambda t, n=noise: keras.ops.sum(layer(t, noise=n, training=True) * weights), logits)
        # J_s at the perturbed logits (softmax at τ = 1) plus J_c at the logits themselves
        relaxed_grad = _gradient(lambda t, n=noise: keras.ops.sum(keras.ops.softmax(t + n, axis=-1) * weights),
                                 logits)
        np.testing.assert_allclose(grad, relaxed_grad + correction_grad, rtol=1e-4, atol=1e-5)
    # the library's residual DAB, with the same correction, evaluates it at the perturbed logits instead
    noise = noises[0]
    grad = _gradient(lambda t: keras.ops.sum(layer(t, noise=noise, training=True) * weights), logits)
    dab = _argmax_with("dab", logits, noise)
    dab.estimator_state.approximator.set_weights(approximator.get_weights())
    dab_grad = _gradient(lambda t: keras.ops.sum(dab(t, noise=noise, training=True) * weights), logits)
    perturbed_grad = _gradient(lambda t: keras.ops.sum(approximator(t + noise) * weights), logits)
    relaxed_grad = _gradient(lambda t: keras.ops.sum(keras.ops.softmax(t + noise, axis=-1) * weights), logits)
    np.testing.assert_allclose(dab_grad, relaxed_grad + perturbed_grad, rtol=1e-4, atol=1e-5)
    assert np.abs(dab_grad - grad).max() > 1e-2


def test_mean_fitted_dab_fits_the_noise_average_of_the_sample_minus_its_relaxation():
    import keras

    from dab_keras import layers

    keras.utils.set_random_seed(0)
    sampler = layers.ArgMax(stochastic=True, estimator=tasks.make_estimator("dab_mean"))
    inputs = keras.Input((3,))
    model = keras.Model(inputs, sampler(inputs))
    # the task loss is 0: only the DAB loss trains the correction c(ℓ)
    schedule = keras.optimizers.schedules.CosineDecay(0.01, 600)  # the noisy targets average out as it decays
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=lambda y, p: 0.0 * keras.ops.mean(p))
    x = np.random.default_rng(0).normal(0.0, 1.5, (600 * 512, 3)).astype("float32")
    model.fit(x, x, batch_size=512, epochs=1, verbose=0)
    grid = np.random.default_rng(1).normal(0.0, 1.0, (32, 3)).astype("float32")
    c = keras.ops.convert_to_numpy(sampler.estimator_state.approximator(grid))
    gumbel = -np.log(-np.log(np.random.default_rng(2).uniform(1e-9, 1.0, (20000, 1, 3))))
    perturbed = grid[None] + gumbel
    relaxed = np.exp(perturbed - perturbed.max(-1, keepdims=True))
    relaxed = (relaxed / relaxed.sum(-1, keepdims=True)).mean(0)  # E softmax(ℓ + G)
    softmax = np.exp(grid) / np.exp(grid).sum(-1, keepdims=True)  # E onehot(argmax(ℓ + G))
    target = softmax - relaxed
    assert np.abs(target).max() > 0.1  # the noise average is far from 0: the test can tell
    assert np.abs(c - target).max() < 0.03


def test_vae_recipe_trains_the_zoo_vae_with_a_study_estimator_as_its_residual_dab(tmp_path, fake_mnist):
    import json

    from benchmarks.study import vae_recipe
    from benchmarks.study.__main__ import main
    from dab_keras.zoo import registry as zoo_registry

    data = fake_mnist(200, 20)
    out = tmp_path / "run"
    argv = ["vae-recipe", "--estimator", "dab_mean", "--seed", "1", "--data", str(data), "--decoder-codes",
            "relaxed", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    manifests = [p for p in out.glob("*.json") if p.name != "run.json"]
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["study_estimator"] == "dab_mean" and manifest["model"] == "discrete_vae-dab_mean"
    assert manifest["config"]["decoder_codes"] == "relaxed" and manifest["config"]["dab_residual"] is True
    assert np.isfinite(manifest["metrics"]["neg_elbo"])
    model = vae_recipe.candidate_task("dab_mean").build("dab", dab_residual=True, decoder_codes="relaxed")
    sampler = model.sampler
    assert isinstance(sampler.estimator, study_estimators.MeanFittedDAB)
    assert [layer.units for layer in sampler.estimator_state.approximator.hidden] == [64]  # the zoo's network
    from benchmarks.study import vae_gradients

    weights = out / "discrete_vae-dab_mean-dab.weights.h5"
    state = vae_gradients.load_state("dab_mean", str(weights))  # the gradient diagnostic reads its states
    assert isinstance(state.sampler.estimator, study_estimators.MeanFittedDAB)
    trained = vae_recipe.candidate_task("dab_mean").build("dab", weights=str(weights), dab_residual=True)
    for ours, theirs in zip(state.weights, trained.weights):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert main(argv + ["--resume"]) == 0  # a finished run is not trained again
    assert "discrete_vae-dab_mean" not in zoo_registry.list_models()  # registered for the run only
    with pytest.raises(ValueError, match="trains the residual DAB only"):
        vae_recipe.candidate_task("dab_mean").build("straight_through")
    assert main(["vae-recipe", "--estimator", "dab_mean", "--data", str(tmp_path / "no.npz"),
                 "--out", str(out)]) == 2
