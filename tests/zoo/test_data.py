"""The zoo's data: MNIST from a local .npz or TensorFlow Datasets, binarization, sorting batches."""

import pathlib

import numpy as np
import pytest

from dab_keras.zoo import data

SHARED_MNIST = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist.npz"


def _fake_npz(path, n_train=6, n_test=4, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=(n_train,), dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=(n_test,), dtype=np.uint8),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_load_mnist_from_npz_scales_and_reshapes(tmp_path):
    raw = _fake_npz(tmp_path / "m.npz")
    out = data.load_mnist(tmp_path / "m.npz")
    assert out["x_train"].shape == (6, 28, 28, 1) and out["x_train"].dtype == np.float32
    assert out["x_test"].shape == (4, 28, 28, 1)
    np.testing.assert_array_equal(out["x_train"][..., 0] * 255.0, raw["x_train"].astype(np.float32))
    np.testing.assert_array_equal(out["y_test"], raw["y_test"].astype(np.int32))
    assert out["y_train"].dtype == np.int32


def test_load_mnist_npz_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="data="):
        data.load_mnist(tmp_path / "missing.npz")
    _fake_npz(tmp_path / "nokey.npz", y_test=None)
    with pytest.raises(ValueError, match="lacks y_test"):
        data.load_mnist(tmp_path / "nokey.npz")
    _fake_npz(tmp_path / "shape.npz", x_train=np.zeros((6, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"\(6, 32, 32\)"):
        data.load_mnist(tmp_path / "shape.npz")


@pytest.mark.tensorflow_only
def test_load_mnist_from_tfds_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        out = data.load_mnist("tfds", download=False)
    assert out["x_train"].shape == (10, 28, 28, 1)
    assert out["x_train"].dtype == np.float32
    assert 0.0 <= out["x_train"].min() and out["x_train"].max() <= 1.0
    assert out["y_test"].dtype == np.int32 and out["y_test"].shape == (10,)


@pytest.mark.skipif(not SHARED_MNIST.is_file(), reason="no local copy of mnist.npz beside the checkout")
def test_real_mnist_npz_matches_its_checksum_and_layout():
    assert data.sha256(SHARED_MNIST) == data.MNIST_NPZ_SHA256
    out = data.load_mnist(SHARED_MNIST)
    assert out["x_train"].shape == (60000, 28, 28, 1) and out["x_test"].shape == (10000, 28, 28, 1)
    assert set(np.unique(out["y_train"])) == set(range(10))


def test_binarize_threshold_and_dynamic():
    images = np.array([[0.0, 0.3, 0.5, 0.51, 1.0]], np.float32)
    np.testing.assert_array_equal(data.binarize(images), [[0.0, 0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(data.binarize(images, threshold=0.2), [[0.0, 1.0, 1.0, 1.0, 1.0]])
    probs = np.full((200_000,), 0.3, np.float32)
    sample = data.binarize(probs, "dynamic", seed=0)
    assert set(np.unique(sample)) == {0.0, 1.0}
    assert abs(sample.mean() - 0.3) < 0.005  # ~5 standard errors
    np.testing.assert_array_equal(sample, data.binarize(probs, "dynamic", seed=0))
    assert not np.array_equal(sample, data.binarize(probs, "dynamic", seed=1))
    np.testing.assert_array_equal(data.binarize(np.array([0.0, 1.0]), "dynamic", seed=3), [0.0, 1.0])


def test_binarize_errors():
    with pytest.raises(ValueError, match="method"):
        data.binarize(np.zeros(3), method="otsu")
    with pytest.raises(ValueError, match="threshold"):
        data.binarize(np.zeros(3), threshold=1.0)


def test_sort_batch_targets_sort_the_inputs():
    x, y = data.sort_batch(64, length=10, seed=0)
    assert x.shape == y.shape == (64, 10) and x.dtype == np.float32 and y.dtype == np.int32
    assert (x >= 0).all() and (x < 1).all()
    sorted_x = np.take_along_axis(x, y, axis=-1)
    assert (np.diff(sorted_x, axis=-1) >= 0).all()
    np.testing.assert_array_equal(np.sort(y, axis=-1), np.tile(np.arange(10), (64, 1)))
    x2, _ = data.sort_batch(64, length=10, seed=0)
    np.testing.assert_array_equal(x, x2)
    with pytest.raises(ValueError, match="length"):
        data.sort_batch(4, length=1)
    with pytest.raises(ValueError, match="batch_size"):
        data.sort_batch(0)


def test_float_images_in_unit_range_are_not_divided_again(tmp_path):
    rng = np.random.default_rng(1)
    unit = rng.random((6, 28, 28)).astype(np.float32)
    _fake_npz(tmp_path / "unit.npz", x_train=unit)
    np.testing.assert_array_equal(data.load_mnist(tmp_path / "unit.npz")["x_train"][..., 0], unit)
    intensities = rng.integers(0, 256, size=(6, 28, 28)).astype(np.float64)  # floats 0..255
    _fake_npz(tmp_path / "f255.npz", x_train=intensities)
    np.testing.assert_allclose(data.load_mnist(tmp_path / "f255.npz")["x_train"][..., 0], intensities / 255, rtol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"y_train": np.array([0, 1, 2, 3, 4, 10])}, r"`y_train` must be digits 0\.\.9\. Received: values in \[0, 10\]"),
        ({"y_test": np.array([0, -1, 2, 3])}, r"`y_test` must be digits 0\.\.9\. Received: values in \[-1, 3\]"),
        ({"y_train": np.eye(10)[:6]}, r"`y_train` must be class indices of shape \(N,\) \(not one-hot\)"),
        ({"y_train": np.array([0.5] * 6)}, r"`y_train` must be integers 0\.\.9"),
        ({"y_test": np.array([1, 2, 3])}, r"4 images but 3 labels in `y_test`"),
        ({"x_train": np.zeros((0, 28, 28), np.uint8), "y_train": np.zeros(0, np.uint8)}, r"`x_train` holds no images"),
        ({"x_test": np.full((4, 28, 28), 300, np.int16)}, r"intensities 0\.\.255\. Received: values in \[300, 300\]"),
        ({"x_train": np.full((6, 28, 28), -0.5, np.float32)}, r"must be in \[0, 1\]"),
        ({"x_train": np.full((6, 28, 28), np.nan, np.float32)}, r"NaN or infinite"),
        ({"x_train": np.zeros((6, 28, 28), bool)}, r"dtype=bool"),
    ],
)
def test_npz_contents_are_checked(overrides, message, tmp_path):
    _fake_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(ValueError, match=message) as exc:
        data.load_mnist(tmp_path / "bad.npz")
    assert "bad.npz" in str(exc.value) and len(str(exc.value).splitlines()) == 1


def test_unreadable_npz_files_give_one_line_naming_the_file(tmp_path):
    _fake_npz(tmp_path / "good.npz")
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.npz").write_bytes(b"not an archive")
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "array.npy", np.zeros(3))
    for name, message in [("truncated.npz", "damaged or truncated"), ("text.npz", r"is not a \.npz \(zip\) archive"),
                          ("empty.npz", "is empty"), ("array.npy", r"is not a \.npz")]:
        with pytest.raises(ValueError, match=message) as exc:
            data.load_mnist(tmp_path / name)
        assert name in str(exc.value) and len(str(exc.value).splitlines()) == 1


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No prepared tfds MNIST, no Keras copy (KERAS_HOME in an empty folder); `online` answers False."""
    monkeypatch.setattr(data, "_tfds_prepared", lambda data_dir=None: False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    calls = []

    def online():
        calls.append(1)
        return False

    return online, calls


def test_tfds_offline_fails_fast_and_says_how_to_pass_a_file(offline):
    online, calls = offline
    with pytest.raises(ConnectionError, match=r"--data PATH/mnist\.npz") as exc:
        data.load_mnist("tfds", online=online)
    assert calls == [1] and len(str(exc.value).splitlines()) == 1
    with pytest.raises(ConnectionError):
        data.resolve_mnist("tfds", online=online)
    assert data.resolve_mnist("tfds", online=lambda: True) == "tfds"


def test_tfds_offline_uses_keras_copy_when_its_checksum_matches(offline, tmp_path):
    online, _ = offline
    local = data.keras_mnist_path()
    local.parent.mkdir(parents=True)
    _fake_npz(local)  # the wrong content: not used
    with pytest.raises(ConnectionError):
        data.resolve_mnist("tfds", online=online)
    if not SHARED_MNIST.is_file():
        pytest.skip("no local copy of mnist.npz beside the checkout")
    local.unlink()
    local.symlink_to(SHARED_MNIST)
    assert data.resolve_mnist("tfds", online=online) == str(local)


def test_can_reach_answers_quickly_for_a_closed_port():
    import socket
    import time

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    assert data.can_reach(("127.0.0.1", port), timeout=1.0) is False
    assert time.perf_counter() - start < 1.5
