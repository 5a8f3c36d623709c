"""The study harness's VAE table (`benchmarks/study/vae.py`) and the harness features it needs."""

import itertools
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.study import gradient_quality as gq  # noqa: E402
from benchmarks.study import report, runner, tasks, vae  # noqa: E402
from benchmarks.study.__main__ import main  # noqa: E402

pytest.importorskip("scipy.optimize")


# ----------------------------------------------------------------------------------- REINFORCE-LOO
def test_leave_one_out_baseline():
    f = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 0.0]])
    np.testing.assert_allclose(gq.leave_one_out_baseline(f), [[4.0, 10.0], [3.5, 5.0], [1.5, 15.0]])
    with pytest.raises(ValueError, match="at least 2 samples"):
        gq.leave_one_out_baseline(np.ones((1, 3)))


def _encoder_variables(model):
    layers = [*model.encoder_layers, model.posterior]
    return [v for layer in layers for v in layer.trainable_variables]


def _codes(latent, size):
    # Every code of `size` bits, or of `size` groups of 3 categories (one-hot).
    if latent == "binary":
        return np.array(list(itertools.product([-1.0, 1.0], repeat=size)), "float32")
    eye = np.eye(3, dtype="float32")
    return np.array([[eye[i] for i in combo] for combo in itertools.product(range(3), repeat=size)], "float32")


def _check_encoder_gradient_is_unbiased(model, latent, size, bias_factor):
    """The mean of `model`'s encoder gradients matches the exact gradient of E_q[-log p(x|z)] + KL.

    The exact gradient enumerates every code; each estimate batch of n copies of one image averages n
    independent estimates (the loss is a batch mean). The check must also reject the estimate with its
    score-function part scaled by `bias_factor` (it has the power to see such a bias).
    """
    import tensorflow as tf

    from dab_keras.zoo import vae_math

    x = (np.random.default_rng(1).random((1, 28, 28, 1)) < 0.3).astype("float32")
    variables = _encoder_variables(model)
    codes = _codes(latent, size)
    k = len(codes)
    f = vae_math.bernoulli_neg_log_likelihood(np.repeat(x, k, axis=0), model.decode(codes))
    with tf.GradientTape(persistent=True) as tape:
        logits = model.posterior_logits(x)
        q = tf.exp(model.log_q(tf.repeat(logits, k, axis=0), codes))
        kl = tf.reduce_sum(model.kl(logits))
        objective = tf.reduce_sum(q * f) + kl
    exact = np.concatenate([np.ravel(g) for g in tape.gradient(objective, variables)])
    kl_gradient = np.concatenate([np.ravel(g) for g in tape.gradient(kl, variables)])

    n, batches = 4000, 10
    means = []
    for _ in range(batches):
        xs = np.repeat(x, n, axis=0)
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=xs, y_pred=model(xs, training=True))
        means.append(np.concatenate([np.ravel(g) for g in tape.gradient(loss, variables)]))
    means = np.stack(means)
    mean = means.mean(axis=0)
    standard_error = means.std(axis=0, ddof=1) / math.sqrt(batches)
    active = np.abs(exact) > 1e-3 * np.abs(exact).max()  # e.g. the gradients of dead ReLU units are 0
    assert active.sum() > 10
    z = (mean[active] - exact[active]) / standard_error[active]
    assert np.max(np.abs(z)) < 5.5  # with a t(9) spread over some hundred components
    assert np.linalg.norm(mean - exact) < 0.05 * np.linalg.norm(exact)
    biased = kl_gradient + bias_factor * (mean - kl_gradient)
    assert np.max(np.abs((biased[active] - exact[active]) / standard_error[active])) > 5.5


def test_reinforce_vae_encoder_gradient_is_unbiased():
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the gradients are taken with tf.GradientTape")
    keras.utils.set_random_seed(0)
    model = vae.reinforce_vae(latent="binary", bits=3, hidden_units=(8,), seed=4, samples=4)
    model.build()
    # power: a baseline that includes the own sample scales the score term by (m - 1) / m
    _check_encoder_gradient_is_unbiased(model, "binary", 3, bias_factor=0.75)


def test_conditional_gumbel_is_the_perturbation_given_its_argmax():
    """z̃ | b has argmax b and the law of z = log π + G restricted to argmax z = b (means and spreads)."""
    rng = np.random.default_rng(0)
    log_probs = np.log(np.array([0.5, 0.3, 0.2]))
    n = 200_000
    z = log_probs - np.log(-np.log(rng.uniform(size=(n, 3))))
    for b in range(3):
        hard = np.zeros((n, 3), "float64")
        hard[:, b] = 1.0
        z_tilde = np.asarray(vae.conditional_gumbel(np.tile(log_probs, (n, 1)), hard, rng.uniform(size=(n, 3))))
        assert np.all(np.argmax(z_tilde, axis=-1) == b)
        picked = z[np.argmax(z, axis=-1) == b]
        error = 5 * picked.std(axis=0) / math.sqrt(len(picked))
        np.testing.assert_array_less(np.abs(z_tilde.mean(axis=0) - picked.mean(axis=0)), error + 0.01)
        np.testing.assert_allclose(z_tilde.std(axis=0), picked.std(axis=0), rtol=0.03)
    # the check has power: unconditional perturbations do not match
    assert np.abs(z.mean(axis=0) - z[np.argmax(z, axis=-1) == 0].mean(axis=0)).max() > 0.1


def test_conditional_logistic_is_the_perturbation_given_its_sign():
    rng = np.random.default_rng(1)
    logits = np.array([-1.5, 0.0, 2.0])
    n = 200_000
    u = rng.uniform(size=(n, 3))
    z = logits + np.log(u) - np.log1p(-u)
    for sign in (-1.0, 1.0):
        z_tilde = np.asarray(vae.conditional_logistic(np.tile(logits, (n, 1)), np.full((n, 3), sign),
                                                      rng.uniform(1e-6, 1 - 1e-6, size=(n, 3))))
        assert np.all(np.sign(z_tilde) == sign)
        for j in range(3):
            picked = z[np.sign(z[:, j]) == sign, j]
            assert abs(z_tilde[:, j].mean() - picked.mean()) < 5 * picked.std() / math.sqrt(len(picked)) + 0.01
            assert z_tilde[:, j].std() == pytest.approx(picked.std(), rel=0.03)


@pytest.mark.parametrize("latent", ["binary", "categorical"])
def test_relax_vae_encoder_gradient_is_unbiased(latent):
    """The mean of RelaxVAE's encoder gradients (control variate at a random, non-zero value) is exact."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("RELAX takes nested tf.GradientTape gradients")
    keras.utils.set_random_seed(0)
    kwargs = {"bits": 3} if latent == "binary" else {"groups": 2, "categories": 3}
    model = vae.relax_vae(latent=latent, hidden_units=(8,), seed=4, control_units=4, **kwargs)
    model.build()
    model.control_out.kernel.assign(np.random.default_rng(2).normal(0, 0.5, model.control_out.kernel.shape))
    # power: a 10 % bias is rejected (z̃ = z instead of the conditional resample is too: it biases by c(z))
    _check_encoder_gradient_is_unbiased(model, latent, 3 if latent == "binary" else 2, bias_factor=0.9)


def test_relax_vae_trains_its_control_variate_only_through_the_variance_term():
    """φ's gradient is that of mean ‖ĝ‖² alone, and the decoder's that of the mean f(b) alone (same noise)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("RELAX takes nested tf.GradientTape gradients")
    import tensorflow as tf

    from dab_keras.zoo import vae_math

    keras.utils.set_random_seed(0)
    model = vae.relax_vae(latent="binary", bits=3, hidden_units=(8,), seed=4, control_units=4)
    model.build()
    model.control_out.kernel.assign(np.random.default_rng(2).normal(0, 0.5, model.control_out.kernel.shape))
    xs = (np.random.default_rng(1).random((64, 28, 28, 1)) < 0.3).astype("float32")
    control = [model.eta, model.log_lambda, *model.control_hidden.trainable_variables,
               *model.control_out.trainable_variables]
    decoder = [v for layer in [*model.decoder_layers, model.likelihood] for v in layer.trainable_variables]
    state = np.asarray(model.noise.state)

    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=xs, y_pred=model(xs, training=True))
    full = tape.gradient(loss, control + decoder)

    model.noise.state.assign(state)  # the same noise again
    with tf.GradientTape(persistent=True) as tape:
        logits = model.posterior_logits(xs)
        g, hard, f = model.relax_gradient(logits, tf.reshape(xs, (64, -1)))
        variance = tf.reduce_mean(tf.reduce_sum(tf.square(g), axis=-1))
        nll = tf.reduce_mean(f)
    np.testing.assert_allclose(f, vae_math.bernoulli_neg_log_likelihood(xs, model.decode(hard)), rtol=1e-6)
    expected = tape.gradient(variance, control) + tape.gradient(nll, decoder)
    assert all(float(tf.reduce_max(tf.abs(e))) > 0 for e in expected[:2])  # η and λ are trained
    for got, want in zip(full, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("latent", ["categorical", "binary"])
def test_mean_straight_through_vae_returns_the_sample_with_its_means_gradient(latent):
    """`straight_through_mean`: the hard sample's value, the Jacobian of E[z | logits] backward."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the gradients are taken with tf.GradientTape")
    import tensorflow as tf

    kwargs = {"groups": 2, "categories": 3} if latent == "categorical" else {"bits": 4}
    model = vae._mean_straight_through_class()(latent=latent, hidden_units=(8,), seed=3, **kwargs)
    model.build()
    logits = tf.constant(np.random.default_rng(0).normal(size=(5, *model.latent_shape)), "float32")
    upstream = tf.constant(np.random.default_rng(1).normal(size=(5, *model.latent_shape)), "float32")
    with tf.GradientTape() as tape:
        tape.watch(logits)
        z = model.draw(logits, training=True, seed=7)
        objective = tf.reduce_sum(z * upstream)
    np.testing.assert_array_equal(z, model.draw(logits, training=False, seed=7))  # exactly the hard sample
    values = np.unique(np.asarray(z))
    assert set(values) <= ({0.0, 1.0} if latent == "categorical" else {-1.0, 1.0})
    u, logit = np.asarray(upstream, "float64"), np.asarray(logits, "float64")
    if latent == "categorical":  # softmax Jacobian: p * (u - <p, u>)
        p = np.exp(logit) / np.exp(logit).sum(-1, keepdims=True)
        expected = p * (u - np.sum(p * u, axis=-1, keepdims=True))
    else:  # d tanh(l / 2) / dl = (1 - tanh(l / 2)^2) / 2
        expected = u * (1.0 - np.tanh(logit / 2.0) ** 2) / 2.0
    np.testing.assert_allclose(tape.gradient(objective, logits), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", ["reinmax", "dab_reinmax"])
@pytest.mark.parametrize("latent", ["categorical", "binary"])
def test_reinmax_rows_are_the_zoo_vae_with_the_librarys_reinmax_base(estimator, latent):
    """`reinmax` / `dab_reinmax`: the zoo's VAE whose sampler uses `surrogate="reinmax"` (the gradients
    themselves are tested with the estimators)."""
    from dab_keras import estimators
    from dab_keras.zoo import vae_model

    model = tasks.TASKS[f"vae_{latent}"].build(estimator, 0)
    assert type(model) is vae_model.DiscreteVAEModel
    sampler = model.sampler.estimator
    assert sampler.surrogate == "reinmax"
    if estimator == "reinmax":
        assert isinstance(sampler, estimators.StraightThrough)
    else:
        zoo_dab = vae_model.DiscreteVAEModel(latent=latent, estimator="dab", dab_residual=True, seed=0)
        zoo_dab.build()
        assert isinstance(sampler, estimators.DAB) and sampler.residual
        assert model.sampler.estimator_state.approximator.get_config() == \
            zoo_dab.sampler.estimator_state.approximator.get_config()


def test_reinforce_vae_needs_two_samples():
    with pytest.raises(ValueError, match=r"`samples` must be an integer >= 2.*Received: samples=1"):
        vae.reinforce_vae(latent="binary", samples=1)


# ----------------------------------------------------------------------------------- linear probe
def test_linear_probe_on_separable_and_on_random_codes():
    rng = np.random.default_rng(0)
    # 4 classes given by the signs of two of 20 bits; the other bits are noise
    codes = rng.choice([-1.0, 1.0], size=(1200, 20))
    labels = (codes[:, 3] > 0) * 2 + (codes[:, 11] > 0)
    assert vae.linear_probe_accuracy(codes[:1000], labels[:1000], codes[1000:], labels[1000:]) == 1.0
    # one-hot codes (a categorical latent): the class is the category of group 0
    onehot = np.eye(5)[rng.integers(0, 5, (1200, 3))]  # (N, 3 groups, 5 categories)
    labels = np.argmax(onehot[:, 0], axis=-1)
    assert vae.linear_probe_accuracy(onehot[:1000], labels[:1000], onehot[1000:], labels[1000:]) == 1.0
    # labels independent of the codes: chance level
    labels = rng.integers(0, 4, 1200)
    assert vae.linear_probe_accuracy(codes[:1000], labels[:1000], codes[1000:], labels[1000:]) < 0.4


# ----------------------------------------------------------------------------------- multi-metric report
def _multi_task(monkeypatch):
    task = tasks.Task(name="fake_vae", description="a fake", build=None, data=lambda path: {}, batch_size=4,
                      metric="neg_elbo", evaluate=None, needs_data=False,
                      units={"neg_elbo": "nats", "probe_accuracy": "%"}, train_metric=None)
    monkeypatch.setitem(tasks.TASKS, task.name, task)
    return task


def _multi_train(task, estimator, seed, steps, data, curve_every=25, log=None):
    base = {"straight_through": 100.0, "dab": 90.0}[estimator]
    evaluations = {s: ({"probe_accuracy": 0.5 + 0.1 * seed + (0.05 if estimator == "dab" else 0.0),
                        "neg_elbo": base + seed - 0.001 * s}, 1.0) for s in steps}
    return evaluations, [[s, 100.0 / s, None] for s in range(5, max(steps) + 1, 5)]


def test_report_writes_one_table_per_metric(tmp_path, monkeypatch):
    task = _multi_task(monkeypatch)
    table = tasks.Table(name="fake", description="Fake table", tasks=(task.name,),
                        estimators=("straight_through", "dab"), seeds=3, steps=(10, 20))
    out = str(tmp_path / "study")
    records = runner.run_table(table, out, train=_multi_train)
    record = records[(task.name, "dab", 1, 20)]
    assert list(record["metrics"]) == ["neg_elbo", "probe_accuracy"] and record["value"] == record["metrics"]["neg_elbo"]
    assert record["units"] == {"neg_elbo": "nats", "probe_accuracy": "%"}
    markdown = report.write_report(records, table, out, table.estimators, table.steps)
    sections = markdown.split("### ")
    assert [s.splitlines()[0] for s in sections[1:]] == ["neg_elbo (nats)", "probe_accuracy (%)"]
    elbo, probe = sections[1], sections[2]
    # means in the metric's own unit: neg_elbo of dab at 20 steps = 90 + mean(0, 1, 2) - 0.02
    assert "| fake_vae | dab | 91.0 ± 2.5 (n=3) | 91.0 ± 2.5 (n=3) |" in elbo
    assert "| Δ neg_elbo (nats) @ 10 steps |" in elbo
    assert "| fake_vae | dab − straight_through | -10.0 ± 0.0 (n=3) | -10.0 ± 0.0 (n=3) |" in elbo
    # a fraction is shown in percent, its differences in points
    assert "| fake_vae | straight_through | 60.0 ± 24.8 (n=3) |" in probe
    assert "| fake_vae | dab − straight_through | +5.0 ± 0.0 (n=3) |" in probe and "(points)" in probe
    assert os.path.exists(os.path.join(out, "curves_fake_vae.png"))
    # the results file alone gives the same report
    assert report.write_report(report_records(out), table, out, table.estimators, table.steps) == markdown


def report_records(out):
    from benchmarks.study import results

    return results.read(os.path.join(out, "results.jsonl"))


def test_evaluate_must_return_the_primary_metric(monkeypatch):
    task = _multi_task(monkeypatch)
    assert runner.as_metrics(task, 3.0) == {"neg_elbo": 3.0}
    assert list(runner.as_metrics(task, {"b": 1.0, "neg_elbo": 2.0})) == ["neg_elbo", "b"]
    with pytest.raises(ValueError, match=r"primary metric 'neg_elbo'.*Received: metrics \['b'\]"):
        runner.as_metrics(task, {"b": 1.0})


def test_estimators_a_table_takes(tmp_path, capsys):
    out = str(tmp_path / "vae")
    assert main(["run", "vae", "--data", "missing.npz", "--out", out, "--estimators", "identity"]) == 2
    assert "for table 'vae'. Received: ['identity']" in capsys.readouterr().err
    assert main(["run", "everyday", "--data", "missing.npz", "--out", out, "--estimators", "reinforce"]) == 2
    assert "Received: ['reinforce']" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- a tiny VAE run
def _random_data(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((300, 28, 28, 1)).astype("float32") ** 3
    labels = rng.integers(0, 10, 300)
    binary = (rng.random(images.shape) < images).astype("float32")
    return {"x_train": images[:200], "y_train": labels[:200], "x_test": binary[200:], "y_test": labels[200:],
            "x_probe": binary[:100], "y_probe": labels[:100]}


@pytest.mark.parametrize("task_name, estimator", [("vae_categorical", "relaxed"), ("vae_binary", "reinforce"),
                                                  ("vae_categorical", "dab_reinmax")])
def test_tiny_vae_run(task_name, estimator, monkeypatch):
    monkeypatch.setattr(vae, "IWAE_IMAGES", 20)
    task = tasks.TASKS[task_name]
    data = _random_data()
    evaluations, curve = runner.train_run(task, estimator, 0, [25, 50], data, curve_every=25)
    metrics, seconds = evaluations[50]
    assert list(metrics) == ["neg_elbo", "neg_iwae_k100", "reconstruction", "probe_accuracy"]
    assert all(math.isfinite(v) for v in metrics.values()) and seconds > 0
    assert metrics["neg_iwae_k100"] < metrics["neg_elbo"] + 20  # k = 100 on 20 images: near or below the ELBO
    assert 0.0 <= metrics["probe_accuracy"] <= 1.0
    assert [point[0] for point in curve] == [25, 50] and all(point[2] is None for point in curve)
    assert all(100 < point[1] < 1000 for point in curve)  # the -ELBO in nats, not the surrogate


def test_vae_prefix_of_a_longer_run_is_the_shorter_run(monkeypatch):
    """τ annealing, batch binarization and data order depend on the step alone: 25 steps of a 50-step run
    equal a 25-step run."""
    monkeypatch.setattr(vae, "IWAE_IMAGES", 10)
    task = tasks.TASKS["vae_categorical"]
    data = _random_data(1)
    short, _ = runner.train_run(task, "straight_through", 3, [25], data)
    long, _ = runner.train_run(task, "straight_through", 3, [25, 50], data)
    np.testing.assert_allclose(list(short[25][0].values()), list(long[25][0].values()), rtol=1e-5)
    assert long[50][0]["neg_elbo"] != long[25][0]["neg_elbo"]


def test_vae_temperature_follows_the_step():
    import keras

    task = tasks.TASKS["vae_categorical"]
    model = task.build("relaxed", 0)
    (callback,) = task.callbacks()
    data = _random_data(2)
    x, _ = vae.vae_batch(data, np.arange(50 * vae.VAE_BATCH) % 200, np.random.default_rng(0))
    model.fit(x, None, batch_size=vae.VAE_BATCH, epochs=1, verbose=0, callbacks=[callback])
    # 50 steps in two compiled calls of 25: τ was set at step 25
    assert float(keras.ops.convert_to_numpy(model.sampler.temperature)) == pytest.approx(0.3 ** (25 / vae.ANNEAL_STEPS), rel=1e-5)
