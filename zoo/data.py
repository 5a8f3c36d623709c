"""Datasets of the zoo: MNIST (TensorFlow Datasets or a local `.npz`), binarization, sorting sequences.

Everything returns NumPy arrays, so the same data feeds `model.fit` on the TensorFlow and JAX backends
(TensorFlow itself is only needed to read through TensorFlow Datasets).
"""

import hashlib
import os

import numpy as np

from dab_keras import _validation

#: sha256 of the Keras-layout `mnist.npz` (60,000 train + 10,000 test images, uint8).
MNIST_NPZ_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
BINARIZATIONS = ("threshold", "dynamic")


def sha256(path, chunk_size=1 << 20):
    """Hex sha256 of the file at `path`, read in chunks.

    Args:
        path: Path of the file (a string or `os.PathLike`).
        chunk_size: Bytes read at a time. Defaults to 1 MiB.

    Returns:
        The 64-character lowercase hex digest.

    Raises:
        FileNotFoundError: if there is no file at `path`.

    Examples:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "abc.txt")
        ...     with open(path, "wb") as f:
        ...         _ = f.write(b"abc")
        ...     sha256(path)
        'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _standardize(images, labels):
    images = np.asarray(images)
    shape = images.shape
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
        raise ValueError(f"MNIST images must have shape (N, 28, 28) or (N, 28, 28, 1). Received: {shape}")
    labels = np.asarray(labels).astype("int32").reshape(-1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"MNIST has {images.shape[0]} images but {labels.shape[0]} labels.")
    return (images.astype("float32") / 255.0), labels


def _load_npz(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No MNIST .npz file at `data`. Received: data={path!r}")
    with np.load(path) as archive:
        missing = [k for k in _NPZ_KEYS if k not in archive.files]
        if missing:
            raise ValueError(
                f"A MNIST .npz needs the arrays {', '.join(_NPZ_KEYS)} (Keras's mnist.npz layout); "
                f"{path!r} lacks {', '.join(missing)}."
            )
        x_train, y_train = _standardize(archive["x_train"], archive["y_train"])
        x_test, y_test = _standardize(archive["x_test"], archive["y_test"])
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _load_tfds(data_dir=None, download=True):
    import tensorflow_datasets as tfds

    out = {}
    for split in ("train", "test"):
        ds = tfds.load("mnist", split=split, as_supervised=True, data_dir=data_dir, download=download)
        images, labels = [], []
        for x, y in tfds.as_numpy(ds.batch(8192)):
            images.append(x)
            labels.append(y)
        out[f"x_{split}"], out[f"y_{split}"] = _standardize(np.concatenate(images), np.concatenate(labels))
    return out


def load_mnist(data="tfds", data_dir=None, download=True):
    """Loads MNIST as float32 images in [0, 1] of shape (N, 28, 28, 1) and int32 labels.

    Args:
        data: `"tfds"` to read TensorFlow Datasets' `mnist` (downloaded on first use), or the path of a
            `.npz` file in Keras's `mnist.npz` layout (`x_train`, `y_train`, `x_test`, `y_test`).
            Defaults to `"tfds"`.
        data_dir: TensorFlow Datasets data directory (tfds only). Defaults to tfds's own.
        download: Whether tfds may download the data set if it is not prepared. Defaults to `True`.

    Returns:
        A dict with `x_train` (60000, 28, 28, 1), `y_train` (60000,), `x_test` (10000, 28, 28, 1) and
        `y_test` (10000,) for the full data set: images float32 (uint8 intensities / 255), labels int32.
        A `.npz` file's arrays keep their own lengths.

    Raises:
        FileNotFoundError: if `data` is a path that does not exist.
        ValueError: if the file lacks an array or has the wrong shapes.

    Examples:
        A `.npz` in Keras's layout (here a tiny stand-in with three training and two test images):

        >>> import os, tempfile
        >>> import numpy as np
        >>> images = np.zeros((3, 28, 28), "uint8")
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "mnist.npz")
        ...     np.savez(path, x_train=images, y_train=[0, 1, 2], x_test=images[:2], y_test=[7, 9])
        ...     mnist = load_mnist(path)
        >>> mnist["x_train"].shape, mnist["x_train"].dtype, mnist["y_test"].tolist()
        ((3, 28, 28, 1), dtype('float32'), [7, 9])

        `load_mnist()` reads TensorFlow Datasets' `mnist` (downloaded once, about 11 MB).
    """
    if data == "tfds":
        return _load_tfds(data_dir=data_dir, download=download)
    return _load_npz(os.fspath(data))


def describe_source(data="tfds"):
    """One line naming an MNIST source for a manifest, without the machine's own paths.

    Args:
        data: `"tfds"` or the path of a `.npz` file, as given to `load_mnist`.

    Returns:
        `"TensorFlow Datasets 'mnist'"`, or the file's name with its sha256 (and a note when it is
        Keras's `mnist.npz`), so that the record identifies the data wherever the file lay.

    Examples:
        >>> describe_source()
        "TensorFlow Datasets 'mnist'"
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "digits.npz")
        ...     with open(path, "wb") as f:
        ...         _ = f.write(b"abc")
        ...     describe_source(path)
        'digits.npz (sha256 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad)'
    """
    if data == "tfds":
        return "TensorFlow Datasets 'mnist'"
    path = os.fspath(data)
    digest = sha256(path)
    note = ", Keras's mnist.npz" if digest == MNIST_NPZ_SHA256 else ""
    return f"{os.path.basename(path)} (sha256 {digest}{note})"


def binarize(images, method="threshold", threshold=0.5, seed=None):
    """Binarizes images in [0, 1].

    - `"threshold"`: 1 where the intensity exceeds `threshold` (a fixed data set, used for evaluation).
    - `"dynamic"`: each pixel is a Bernoulli sample with the intensity as its probability (a fresh
      binarization per call; the usual choice for training VAEs on MNIST).

    Args:
        images: Float array with values in [0, 1].
        method: `"threshold"` or `"dynamic"`. Defaults to `"threshold"`.
        threshold: Threshold of the `"threshold"` method, in [0, 1). Defaults to `0.5`.
        seed: Seed (int or `numpy.random.Generator`) of the `"dynamic"` method. Defaults to `None`.

    Returns:
        A float32 array of `images`' shape with values in {0, 1}.

    Raises:
        ValueError: for an unknown `method` or a `threshold` outside [0, 1).

    Examples:
        >>> import numpy as np
        >>> images = np.array([[0.0, 0.4, 0.6, 1.0]])
        >>> binarize(images).tolist()
        [[0.0, 0.0, 1.0, 1.0]]
        >>> binarize(images, "dynamic", seed=0).shape  # Bernoulli(0.4), Bernoulli(0.6), ...
        (1, 4)
    """
    _validation.check_one_of("method", method, BINARIZATIONS)
    images = np.asarray(images, dtype="float32")
    if method == "threshold":
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"`threshold` must be in [0, 1). Received: threshold={threshold!r}")
        return (images > threshold).astype("float32")
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape, dtype=np.float32) < images).astype("float32")


def sort_batch(batch_size, length=10, seed=None):
    """One batch of the sorting task: sequences from U(0, 1) and their ascending argsort.

    Args:
        batch_size: Number of sequences, >= 1.
        length: Sequence length L, >= 2. Defaults to `10` (the DAB paper's 10-sort).
        seed: Seed (int or `numpy.random.Generator`). Defaults to `None`.

    Returns:
        `(x, y)`: float32 `(batch_size, L)` values and int32 `(batch_size, L)` targets, where `y[b, i]` is
        the index in `x[b]` of its i-th smallest value.

    Raises:
        ValueError: if `batch_size` < 1 or `length` < 2 (or not integers).

    Examples:
        >>> import numpy as np
        >>> x, y = sort_batch(2, length=4, seed=0)
        >>> x.shape, y.dtype
        ((2, 4), dtype('int32'))
        >>> bool((np.take_along_axis(x, y, axis=-1) == np.sort(x, axis=-1)).all())
        True
    """
    batch_size = _validation.check_int("batch_size", batch_size, 1)
    length = _validation.check_int("length", length, 2)
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, length), dtype=np.float32)
    return x, np.argsort(x, axis=-1, kind="stable").astype("int32")
