"""Datasets of the zoo: MNIST (TensorFlow Datasets or a local `.npz`), binarization, sorting sequences.

Everything returns NumPy arrays, so the same data feeds `model.fit` on the TensorFlow and JAX backends
(TensorFlow itself is only needed to read through TensorFlow Datasets).
"""

import hashlib
import logging
import os
import pathlib
import socket
import warnings
import zipfile
import zlib

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


def _images(images, name, source):
    images = np.asarray(images)
    shape = images.shape
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
        raise ValueError(
            f"{source}: MNIST images `{name}` must have shape (N, 28, 28) or (N, 28, 28, 1). Received: {shape}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{source}: `{name}` holds no images (shape {shape}).")
    kind = images.dtype.kind
    if kind in "iu":
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{source}: integer images `{name}` must hold intensities 0..255. Received: values in "
                f"[{low}, {high}]"
            )
        return images.astype("float32") / 255.0
    if kind != "f":
        raise ValueError(
            f"{source}: images `{name}` must be uint8 intensities 0..255 or floats in [0, 1]. "
            f"Received: dtype={images.dtype}"
        )
    if not np.isfinite(images).all():
        raise ValueError(f"{source}: images `{name}` hold NaN or infinite values.")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 255.0:
        raise ValueError(
            f"{source}: float images `{name}` must be in [0, 1] (or intensities in [0, 255]). Received: "
            f"values in [{low:g}, {high:g}]"
        )
    images = images.astype("float32")
    # Floats already in [0, 1] are used as they are; larger values are intensities 0..255.
    return images if high <= 1.0 else images / 255.0


def _labels(labels, name, n_images, source):
    labels = np.asarray(labels)
    shape = labels.shape
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"{source}: labels `{name}` must be class indices of shape (N,) (not one-hot). Received: shape {shape}"
        )
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype("int64")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{source}: labels `{name}` must be integers 0..9. Received: dtype={labels.dtype}")
    if labels.shape[0] != n_images:
        raise ValueError(f"{source}: {n_images} images but {labels.shape[0]} labels in `{name}`.")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > 9:
        raise ValueError(f"{source}: labels `{name}` must be digits 0..9. Received: values in [{low}, {high}]")
    return labels.astype("int32")


def _standardize(images, labels, split="train", source="MNIST"):
    x = _images(images, f"x_{split}", source)
    return x, _labels(labels, f"y_{split}", x.shape[0], source)


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _load_npz(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No MNIST .npz file at `data`. Received: data={path!r}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head not in _ZIP_MAGIC:
        size = os.path.getsize(path)
        what = "is empty" if size == 0 else f"is not a .npz (zip) archive ({size} bytes, starting {head!r})"
        raise ValueError(f"The MNIST file {path!r} {what}. Pass a .npz in Keras's mnist.npz layout.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in _NPZ_KEYS if k not in archive.files]
            if missing:
                raise ValueError(
                    f"A MNIST .npz needs the arrays {', '.join(_NPZ_KEYS)} (Keras's mnist.npz layout); "
                    f"{path!r} lacks {', '.join(missing)}."
                )
            arrays = {k: archive[k] for k in _NPZ_KEYS}
    except ValueError as e:
        if str(e).startswith("A MNIST .npz needs"):
            raise
        raise ValueError(f"The MNIST file {path!r} cannot be read as a .npz archive: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(
            f"The MNIST file {path!r} is damaged or truncated ({type(e).__name__}: {e})."
        ) from None
    source = f"MNIST file {path!r}"
    x_train, y_train = _standardize(arrays["x_train"], arrays["y_train"], "train", source)
    x_test, y_test = _standardize(arrays["x_test"], arrays["y_test"], "test", source)
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
        out[f"x_{split}"], out[f"y_{split}"] = _standardize(
            np.concatenate(images), np.concatenate(labels), split, "TensorFlow Datasets 'mnist'"
        )
    return out


#: Host TensorFlow Datasets downloads MNIST from, probed before a download.
TFDS_HOST = ("storage.googleapis.com", 443)


def can_reach(address=TFDS_HOST, timeout=3.0):
    """Whether a TCP connection to `address` opens within `timeout` seconds (a quick offline test).

    Args:
        address: `(host, port)`. Defaults to `TFDS_HOST`, where TensorFlow Datasets downloads MNIST.
        timeout: Seconds to wait. Defaults to `3.0`.

    Returns:
        `True` if the connection opened, else `False` (no network, no DNS, a firewall).

    Examples:
        >>> can_reach(("127.0.0.1", 9), timeout=0.5)  # the discard port, closed on most machines
        False
    """
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def keras_mnist_path():
    """Where `keras.datasets.mnist.load_data()` keeps its copy: `$KERAS_HOME/datasets/mnist.npz`.

    Returns:
        A `pathlib.Path` (`~/.keras/datasets/mnist.npz` unless `KERAS_HOME` is set); it may not exist.

    Examples:
        >>> keras_mnist_path().name
        'mnist.npz'
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return pathlib.Path(home) / "datasets" / "mnist.npz"


def _tfds_prepared(data_dir=None):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return False
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # an empty tfds folder is not worth a warning here
    try:
        return bool(tfds.builder("mnist", data_dir=data_dir).is_prepared())
    except Exception:  # a damaged tfds folder counts as not prepared
        return False
    finally:
        absl_logger.setLevel(level)


def resolve_mnist(data="tfds", data_dir=None, online=None):
    """Picks a local MNIST source when TensorFlow Datasets would need a download that cannot happen.

    `"tfds"` stays `"tfds"` when its `mnist` is prepared (in `data_dir`) or the download host answers
    (`can_reach`, 3 s); else Keras's copy (`keras_mnist_path`, checked by its sha256) is used; else a
    `ConnectionError` says how to pass a local file. A path is checked to exist.

    Args:
        data: `"tfds"` or the path of a `.npz` file. Defaults to `"tfds"`.
        data_dir: TensorFlow Datasets data directory. Defaults to tfds's own.
        online: Function `() -> bool` that tells whether a download can happen. Defaults to `None`
            (`can_reach` on `TFDS_HOST`).

    Returns:
        `"tfds"` or a path (a string) to load with `load_mnist`.

    Raises:
        ConnectionError: if tfds has no MNIST, the network is unreachable and Keras has no copy.
        FileNotFoundError: if `data` is a path with no file.

    Examples:
        >>> resolve_mnist("tfds", online=lambda: True)
        'tfds'
    """
    if data != "tfds":
        path = os.fspath(data)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No MNIST .npz file at `data`. Received: data={path!r}")
        return path
    if _tfds_prepared(data_dir) or (online or can_reach)():
        return "tfds"
    local = keras_mnist_path()
    if local.is_file() and sha256(local) == MNIST_NPZ_SHA256:
        return str(local)
    raise ConnectionError(
        f"MNIST is not in TensorFlow Datasets' folder and {TFDS_HOST[0]} cannot be reached to download it. "
        "Pass a local copy: --data PATH/mnist.npz (data=... in Python; Keras's layout, e.g. from "
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz)."
    )


def load_mnist(data="tfds", data_dir=None, download=True, online=None):
    """Loads MNIST as float32 images in [0, 1] of shape (N, 28, 28, 1) and int32 labels.

    Images stored as integers must hold intensities 0..255 and are divided by 255; float images already
    in [0, 1] are kept as they are (never divided twice), float images with larger values up to 255 are
    taken as intensities and divided by 255. Labels must be digits 0..9 of shape (N,) (or (N, 1)).

    Args:
        data: `"tfds"` to read TensorFlow Datasets' `mnist` (downloaded on first use), or the path of a
            `.npz` file in Keras's `mnist.npz` layout (`x_train`, `y_train`, `x_test`, `y_test`).
            Defaults to `"tfds"`. Offline, `"tfds"` falls back to Keras's copy (see `resolve_mnist`) or
            fails within seconds.
        data_dir: TensorFlow Datasets data directory (tfds only). Defaults to tfds's own.
        download: Whether tfds may download the data set if it is not prepared. Defaults to `True`.
        online: Function `() -> bool` telling whether a download can happen (see `resolve_mnist`).
            Defaults to `None` (a 3-second connection test).

    Returns:
        A dict with `x_train` (60000, 28, 28, 1), `y_train` (60000,), `x_test` (10000, 28, 28, 1) and
        `y_test` (10000,) for the full data set: images float32 in [0, 1], labels int32.
        A `.npz` file's arrays keep their own lengths.

    Raises:
        FileNotFoundError: if `data` is a path that does not exist.
        ValueError: if the file is not a readable `.npz`, lacks an array, or an array has the wrong
            shape, dtype or range (the message names the file and the array), or is empty.
        ConnectionError: for `"tfds"` offline without a local copy (the message says how to pass one).

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
        source = resolve_mnist("tfds", data_dir=data_dir, online=online) if download else "tfds"
        if source == "tfds":
            return _load_tfds(data_dir=data_dir, download=download and not _tfds_prepared(data_dir))
        warnings.warn(f"TensorFlow Datasets cannot download MNIST (offline); using Keras's copy at {source}.",
                      stacklevel=2)
        data = source
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
