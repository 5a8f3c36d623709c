"""The trained-state gradient diagnostic of the zoo VAE (`benchmarks/study/vae_gradients.py`)."""

import doctest
import itertools
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.study import gradient_quality as gq  # noqa: E402
from benchmarks.study import vae_gradients as vg  # noqa: E402
from dab_keras import estimators, layers  # noqa: E402
from dab_keras.zoo.vae_model import DiscreteVAEModel  # noqa: E402


def _tiny_model(estimator="relaxed", **kwargs):
    keras.utils.set_random_seed(0)
    model = DiscreteVAEModel(estimator=estimator, groups=2, categories=3, hidden_units=(8,), seed=0, **kwargs)
    model.build()
    return model


def _images(n=3, seed=0):
    return (np.random.default_rng(seed).random((n, 28, 28, 1)) < 0.3).astype("float32")


def _log_likelihood(model, images, z):
    from dab_keras.zoo import vae_math

    logits = model.decode(z.astype("float32"))
    return -np.asarray(keras.ops.convert_to_numpy(vae_math.bernoulli_neg_log_likelihood(
        images.reshape(len(images), -1), logits)), "float64")


def _exact_gradient(model, images, logits):
    # ∇_ℓ Σ_b E_q log p(x_b | z) by enumerating every code: Σ_z q(z) f(z) (z_g − π_g) per group.
    groups, categories = logits.shape[1:]
    probs = gq._softmax(logits)
    eye = np.eye(categories)
    grad = np.zeros_like(logits)
    for combo in itertools.product(range(categories), repeat=groups):
        z = np.broadcast_to(eye[list(combo)], logits.shape)
        q = np.prod(np.sum(probs * z, axis=-1), axis=-1)  # (B,)
        f = _log_likelihood(model, images, np.ascontiguousarray(z))
        grad += (q * f)[:, None, None] * (z - probs)
    return grad


def test_the_module_examples_hold():
    failures, _ = doctest.testmod(vg, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0


def test_group_substitutions_replace_exactly_one_group():
    rng = np.random.default_rng(0)
    z = np.eye(4)[rng.integers(0, 4, (2, 3))]  # B = 2, G = 3, K = 4
    out = vg.group_substitutions(z)
    assert out.shape == (2, 3, 4, 3, 4)
    for b, g, c in itertools.product(range(2), range(3), range(4)):
        expected = z[b].copy()
        expected[g] = np.eye(4)[c]
        np.testing.assert_array_equal(out[b, g, c], expected)


def test_the_reference_is_an_unbiased_estimate_of_the_exact_gradient():
    model = _tiny_model()
    images = _images()
    logits = np.random.default_rng(1).normal(0.0, 1.0, (3, 2, 3))
    exact = _exact_gradient(model, images, logits)
    estimates, error = vg.reference_gradient(model, images, logits, 3000, np.random.default_rng(2))
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - exact) <= 4.5 * standard_error + 1e-4)
    assert error > 0.0  # a one-hidden-layer decoder with a softplus likelihood is not linear in z


def test_pathwise_estimates_through_the_relaxation_follow_the_chain_rule():
    # The Gumbel-Softmax gradient: J_softmax((ℓ + n)/τ)ᵀ ∇_z f at the soft code, for each noise draw.
    model = _tiny_model()
    images = _images(2)
    logits = np.random.default_rng(3).normal(0.0, 1.0, (2, 2, 3))
    tau = 0.7
    layer = layers.ArgMax(axis=-1, estimator=estimators.Relaxed(temperature=tau))
    estimates = vg.pathwise_estimates(model, layer, images, logits, 4, np.random.default_rng(4))

    noise = gq.gumbel_noise((8, 2, 3), np.random.default_rng(4)).astype("float32").astype("float64")
    tiled = np.tile(logits, (4, 1, 1))
    soft = gq._softmax((tiled + noise) / tau)
    upstream = vg.decoder_gradient(model, np.tile(images, (4, 1, 1, 1)), soft)
    expected = soft * (upstream - np.sum(soft * upstream, axis=-1, keepdims=True)) / tau
    np.testing.assert_allclose(estimates, expected.reshape(estimates.shape), rtol=2e-3, atol=2e-4)


def test_pathwise_estimates_of_straight_through_use_the_hard_code_decoder_gradient():
    model = _tiny_model()
    images = _images(2)
    logits = np.random.default_rng(5).normal(0.0, 1.0, (2, 2, 3))
    layer = layers.ArgMax(axis=-1, estimator=estimators.StraightThrough(surrogate="relaxation", temperature=1.0))
    estimates = vg.pathwise_estimates(model, layer, images, logits, 3, np.random.default_rng(6))

    noise = gq.gumbel_noise((6, 2, 3), np.random.default_rng(6)).astype("float32").astype("float64")
    a = np.tile(logits, (3, 1, 1)) + noise
    hard = np.eye(3)[np.argmax(a, axis=-1)]
    soft = gq._softmax(a)
    upstream = vg.decoder_gradient(model, np.tile(images, (3, 1, 1, 1)), hard)
    expected = soft * (upstream - np.sum(soft * upstream, axis=-1, keepdims=True))
    np.testing.assert_allclose(estimates, expected.reshape(estimates.shape), rtol=2e-3, atol=2e-4)


def test_first_order_error_by_hand():
    probs = np.array([[[0.2, 0.3, 0.5]]])
    z = np.array([[[0.0, 1.0, 0.0]]])
    values = np.array([[[1.0, 3.0, 0.0]]])  # changes (−2, 0, −3)
    gradient = np.array([[[0.0, 1.0, -1.0]]])  # predicted changes (−1, 0, −2)
    assert vg.first_order_error(probs, z, values, gradient) == pytest.approx((0.2 * 1 + 0.5 * 1, 0.2 * 4 + 0.5 * 9))


def test_summarize_resolves_an_offset_and_not_a_resample():
    rng = np.random.default_rng(7)
    mean = rng.normal(size=(4, 5))
    reference = mean + rng.normal(size=(4000, 4, 5))
    offset = np.zeros((4, 5))
    offset[0, 0] = 0.5 * np.linalg.norm(mean)
    biased = vg.summarize(mean + offset + rng.normal(size=(4000, 4, 5)), reference)
    assert biased["bias"] == pytest.approx(0.5, abs=0.05)
    assert biased["bias"] > 3 * biased["floor"]
    same = vg.summarize(mean + rng.normal(size=(4000, 4, 5)), reference)
    assert same["bias"] < 2 * same["floor"]
    assert same["sd"] == pytest.approx(np.sqrt(20) / np.linalg.norm(mean), rel=0.05)
    assert same["cos_mean"] > 0.99


def test_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 5)) * 2.0

    def entropy(ell):
        p = gq._softmax(ell)
        return float(-np.sum(p * np.log(p)))

    numeric = np.zeros_like(logits)
    eps = 1e-6
    for index in np.ndindex(logits.shape):
        step = np.zeros_like(logits)
        step[index] = eps
        numeric[index] = (entropy(logits + step) - entropy(logits - step)) / (2 * eps)
    np.testing.assert_allclose(vg.entropy_gradient(gq._softmax(logits)), numeric, atol=1e-7)


def test_entropy_slope_measures_the_component_along_the_entropy_gradient():
    rng = np.random.default_rng(4)
    direction = vg.entropy_gradient(gq._softmax(rng.normal(size=(3, 2, 4))))
    unit = direction / np.linalg.norm(direction)
    other = rng.normal(size=direction.shape)
    other -= np.sum(other * unit) * unit  # orthogonal to the entropy gradient
    estimates = -0.3 * unit + other + 0.1 * rng.normal(size=(2000, *direction.shape))
    slope, half = vg.entropy_slope(estimates, direction, scale=1.0)
    assert slope == pytest.approx(-0.3, abs=3 * half) and half < 0.01
    assert vg.entropy_slope(estimates, direction, scale=2.0)[0] == pytest.approx(slope / 2)


def test_measure_state_rows_include_the_states_own_dab():
    model = _tiny_model("dab", dab_residual=True, sample_gradient="reinmax")
    rows, info = vg.measure_state(model, _images(4), temperature=0.5, samples=8, reference_samples=6, log=lambda _: None)
    labels = [row["estimator"] for row in rows]
    assert labels[:3] == ["straight-through Gumbel, τ=0.5", "Gumbel-Softmax (relaxed), τ=0.5", "ReinMax"]
    assert labels[3].startswith("the state's own DAB (reinmax base")
    for row in rows:
        assert all(np.isfinite(row[key]) for key in [*(k for k, _ in vg.COLUMNS), "entropy_slope",
                                                      "entropy_slope_half"])
    assert 0.0 < info["entropy"] <= np.log(3) + 1e-9 and np.isfinite(info["entropy_slope"])
    text = vg.table_markdown([("tiny", rows, {**info, "neg_elbo": 500.0})])
    assert text.count("\n") == 2 + len(rows)


def test_a_relaxed_state_has_no_own_row():
    assert len(vg.estimator_layers(_tiny_model(), 1.0)) == 3


@pytest.mark.parametrize("spec, message", [
    ("no-equals", "LABEL=KIND:WEIGHTS"),
    ("a=relaxed", "LABEL=KIND:WEIGHTS"),
    ("a=gumbel:w.h5", "KIND must be one of"),
    ("a=relaxed:w.h5@hot", "TAU must be a number > 0"),
    ("a=relaxed:w.h5@-1", "TAU must be a number > 0"),
])
def test_parse_state_errors_name_the_argument(spec, message):
    with pytest.raises(ValueError, match=message):
        vg.parse_state(spec)


def test_parse_state():
    assert vg.parse_state("GS, epoch 5=relaxed:runs/e5.weights.h5@0.9") == ("GS, epoch 5", "relaxed",
                                                                             "runs/e5.weights.h5", 0.9)
    assert vg.parse_state("x=dab_residual_reinmax:w.h5")[3] == 1.0


def test_command_line_measures_shipped_states(tmp_path, fake_mnist):
    from benchmarks.study.__main__ import main
    from dab_keras.zoo import weights as zoo_weights

    data = fake_mnist(3, 6)
    weights = zoo_weights.WEIGHTS_DIR
    out = tmp_path / "table.md"
    rc = main(["vae-gradients", "--data", str(data), "--images", "3", "--samples", "4", "--reference-samples", "3",
               "--output", str(out),
               "--state", f"GS=relaxed:{weights}/discrete_vae-relaxed.weights.h5@0.3",
               "--state", f"DR=dab_residual_reinmax:{weights}/discrete_vae-dab_residual_reinmax.weights.h5"])
    assert rc == 0
    lines = out.read_text().splitlines()
    states = [line.split("|")[1].strip() for line in lines if line.startswith("| ") and not line.startswith("| |")]
    assert states == ["state", "GS", "DR"]
    first_dr = next(i for i, line in enumerate(lines) if line.startswith("| DR"))
    estimators_of_dr = [line.split("|")[6].strip() for line in lines[first_dr:] if line.startswith("|")]
    assert len(estimators_of_dr) == 4
    assert estimators_of_dr[-1].startswith("the state's own DAB (reinmax base")
    assert "τ=0.3" in out.read_text() and "τ=1" in out.read_text()
    with pytest.raises(SystemExit, match="--images"):
        main(["vae-gradients", "--data", str(data), "--images", "1", "--state", "a=relaxed:w.h5"])
    with pytest.raises(SystemExit, match="KIND must be one of"):
        main(["vae-gradients", "--data", str(data), "--state", "a=magic:w.h5"])


def test_bound_terms_split_the_elbo_into_reconstruction_and_kl():
    from dab_keras.zoo import vae_evaluation, vae_math

    model = _tiny_model("straight_through")
    images = _images(5)
    terms = vg.bound_terms(model, images)
    assert terms["neg_elbo"] == pytest.approx(vae_evaluation.mean_bound(model.neg_elbo, images), rel=1e-9)
    logits = model.posterior_logits(images)
    kl = float(np.mean(keras.ops.convert_to_numpy(vae_math.categorical_kl_to_uniform(logits))))
    assert terms["kl"] == pytest.approx(kl, rel=1e-5)
    assert terms["reconstruction"] == pytest.approx(terms["neg_elbo"] - kl, rel=1e-5)
    # KL to the uniform prior is G (log K − H): the entropy is its complement
    assert terms["entropy"] == pytest.approx(np.log(3) - kl / 2, rel=1e-4)
    probs = gq._softmax(np.asarray(keras.ops.convert_to_numpy(logits), "float64"))
    assert terms["entropy"] == pytest.approx(float(np.mean(-np.sum(probs * np.log(probs), axis=-1))), rel=1e-4)


def test_command_line_bounds_only(tmp_path, fake_mnist):
    from benchmarks.study.__main__ import main
    from dab_keras.zoo import weights as zoo_weights

    data = fake_mnist(3, 7, seed=1)
    out = tmp_path / "bounds.md"
    weights = zoo_weights.WEIGHTS_DIR / "discrete_vae-relaxed.weights.h5"
    assert main(["vae-gradients", "--data", str(data), "--bounds-only", "--output", str(out),
                 "--state", f"GS=relaxed:{weights}"]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| GS")]
    assert len(rows) == 1
    neg_elbo, reconstruction, kl = (float(v) for v in rows[0].split("|")[2:5])
    assert neg_elbo == pytest.approx(reconstruction + kl, abs=0.02) and kl > 0

