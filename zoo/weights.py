"""Weight files of the zoo and their manifests.

Every shipped weight file `weights/<model>-<estimator>.weights.h5` has a manifest
`weights/<model>-<estimator>.json` beside it:

```json
{"model": "sorter", "estimator": "dab", "weights": "sorter-dab.weights.h5", "sha256": "...",
 "config": {...constructor arguments...}, "metrics": {...test metrics...},
 "command": "dab-zoo train sorter --estimator dab ...", "data": "...", "seed": 0, ...}
```

Loading checks the file's sha256 against the manifest and the model's configuration against the one the
weights were trained with, and fails with a message that names both when they differ. The estimator is
free: weights trained with one estimator load into a model built with another (`load`). A path given by the
user is loaded as is; when a manifest with the same stem lies beside it (as `dab-zoo train` writes one),
it is checked the same way. Files are keyed by the estimator's name (`estimator_key`).
"""

import json
import os
import re
from pathlib import Path

from dab_keras import _validation
from dab_keras import estimators as dab_estimators
from dab_keras.zoo import data as zoo_data

#: Folder of the weight files shipped with the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_SUFFIX = ".weights.h5"

#: Estimators every zoo model trains with, by their registry names (the keys of weight files).
ESTIMATORS = ("dab", "straight_through", "relaxed")

#: The key of weights trained with the residual DAB (`dab_residual=True`): a file of its own beside the
#: paper's DAB (`"dab"`), since one's approximator is not the other's.
RESIDUAL_DAB = "dab_residual"

#: The suffix of the key of weights trained with ReinMax's gradient as the base (`sample_gradient="reinmax"`
#: of the discrete VAEs): `"straight_through_reinmax"`, `"dab_residual_reinmax"`.
REINMAX = "_reinmax"

#: Every key a shipped weight file may have (`weights=` takes each of them by name).
WEIGHT_KEYS = (*ESTIMATORS, RESIDUAL_DAB, f"straight_through{REINMAX}", f"{RESIDUAL_DAB}{REINMAX}")


def weights_filename(model, estimator):
    """File name of the weights of `model` trained with `estimator`.

    Args:
        model: Registry name of the model, e.g. `"sorter"`.
        estimator: Estimator key, e.g. `"dab"`.

    Returns:
        `"<model>-<estimator>.weights.h5"`.

    Examples:
        >>> weights_filename("sorter", "dab")
        'sorter-dab.weights.h5'
    """
    return f"{model}-{estimator}{_SUFFIX}"


def weights_key(estimator, dab_residual=False, sample_gradient="relaxation"):
    """Key of the weight files of an estimator key: `"dab_residual"` for the residual DAB, else the key itself.

    Weights trained with ReinMax's gradient as the base (`sample_gradient="reinmax"`) add `"_reinmax"`.

    Args:
        estimator: Estimator key (`"dab"`, `"straight_through"`, `"relaxed"`) or `None` (a custom estimator).
        dab_residual: Whether the DAB is the residual one. Defaults to `False`.
        sample_gradient: `"relaxation"` or `"reinmax"` (the discrete VAEs' option). Defaults to
            `"relaxation"`.

    Returns:
        A key of `WEIGHT_KEYS`, or `None` for `estimator=None`.

    Examples:
        >>> weights_key("dab"), weights_key("dab", dab_residual=True), weights_key("relaxed")
        ('dab', 'dab_residual', 'relaxed')
        >>> weights_key("dab", dab_residual=True, sample_gradient="reinmax")
        'dab_residual_reinmax'
    """
    key = RESIDUAL_DAB if estimator == "dab" and dab_residual else estimator
    return key + REINMAX if key is not None and sample_gradient == "reinmax" else key


def shipped_keys(model):
    """Keys of the weight files shipped for `model`, sorted (e.g. `['dab', 'dab_residual', 'relaxed']`).

    Args:
        model: Registry name.

    Returns:
        A list of keys of `WEIGHT_KEYS` (empty when none ship).

    Examples:
        >>> shipped_keys("sorter")
        ['dab', 'dab_residual', 'straight_through']
    """
    if not WEIGHTS_DIR.is_dir():
        return []
    prefix = f"{model}-"
    names = (p.name for p in WEIGHTS_DIR.glob(f"{model}-*{_SUFFIX}"))
    return sorted(k for k in (n[len(prefix):-len(_SUFFIX)] for n in names) if k in WEIGHT_KEYS)


def estimator_key(estimator):
    """The name (`"dab"`, `"straight_through"`, `"relaxed"`) of an estimator, or `None` for a custom one.

    A string alias resolves to its canonical name (`"ste"` → `"straight_through"`); an estimator object
    counts as custom (its settings may differ from the recipe the shipped weights were trained with).

    Args:
        estimator: A name or alias from `dab_keras.estimators.ALIASES`, or an `Estimator` instance.

    Returns:
        `"dab"`, `"straight_through"` or `"relaxed"`, or `None` for an `Estimator` instance.

    Raises:
        ValueError: for an unknown name or another kind of object.

    Examples:
        >>> from dab_keras import estimators
        >>> estimator_key("ste"), estimator_key("dab"), estimator_key(estimators.Relaxed(0.5))
        ('straight_through', 'dab', None)
    """
    if isinstance(estimator, str):
        cls = dab_estimators.ALIASES.get(estimator)
        if cls is None:
            raise ValueError(
                f"Unknown estimator. Expected one of {sorted(dab_estimators.ALIASES)} or an Estimator "
                f"instance. Received: estimator={estimator!r}"
            )
        return {dab_estimators.StraightThrough: "straight_through", dab_estimators.Relaxed: "relaxed",
                dab_estimators.DAB: "dab"}[cls]
    if isinstance(estimator, dab_estimators.Estimator):
        return None
    raise ValueError(
        f"`estimator` must be one of {list(ESTIMATORS)} or an Estimator instance. Received: {estimator!r}"
    )


def manifest_path(weights_path):
    """Path of the manifest that belongs to `weights_path` (`x.weights.h5` → `x.json`).

    Args:
        weights_path: Path of a weight file (a string or `os.PathLike`); it need not exist.

    Returns:
        A `pathlib.Path` beside it: the `.weights.h5` suffix (or, for other names, the last suffix)
        replaced by `.json`.

    Examples:
        >>> manifest_path("runs/sorter-dab.weights.h5").as_posix()
        'runs/sorter-dab.json'
        >>> manifest_path("model.h5").name
        'model.json'
    """
    weights_path = Path(weights_path)
    name = weights_path.name
    stem = name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else weights_path.stem
    return weights_path.with_name(stem + ".json")


def read_manifest(path):
    """Reads a manifest JSON file.

    Args:
        path: Path of the manifest (a string or `os.PathLike`).

    Returns:
        The manifest as a dict.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        ValueError: if the file is not valid JSON or not a JSON object (the message names the file).

    Examples:
        >>> manifest = read_manifest(manifest_path(pretrained_path("sorter", "dab")))
        >>> manifest["weights"], manifest["config"]["latent_units"]
        ('sorter-dab.weights.h5', 256)
    """
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"The manifest {path} is not valid JSON ({e}). Restore it, or delete it to load the "
                         "weights without their checks.") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"The manifest {path} must hold a JSON object. Received: {type(manifest).__name__}")
    return manifest


def write_manifest(weights_path, **fields):
    """Writes the manifest of `weights_path` (adds its file name and sha256) and returns its path.

    Args:
        weights_path: Path of an existing weight file.
        **fields: JSON-serializable entries of the manifest (`model`, `estimator`, `config`, `metrics`,
            `command`, ...), written after `weights` and `sha256` in the order given.

    Returns:
        The `pathlib.Path` of the manifest written (see `manifest_path`), overwriting any file there.

    Examples:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "toy-dab.weights.h5")
        ...     with open(path, "wb") as f:
        ...         _ = f.write(b"abc")
        ...     manifest = read_manifest(write_manifest(path, model="toy", estimator="dab"))
        >>> manifest["weights"], manifest["model"], manifest["sha256"][:12]
        ('toy-dab.weights.h5', 'toy', 'ba7816bf8f01')
    """
    weights_path = Path(weights_path)
    manifest = {"weights": weights_path.name, "sha256": zoo_data.sha256(weights_path), **fields}
    path = manifest_path(weights_path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    return path


def shipped_manifests(model=None):
    """Manifests of the shipped weight files, optionally of one model, sorted by model and estimator.

    Args:
        model: Registry name to select, or `None` for all models. Defaults to `None`.

    Returns:
        A list of manifest dicts (empty when no weights are installed), in the order of their file names.

    Examples:
        >>> [m["weights"] for m in shipped_manifests("discrete_vae")]  # doctest: +NORMALIZE_WHITESPACE
        ['discrete_vae-dab.weights.h5', 'discrete_vae-dab_residual.weights.h5',
         'discrete_vae-dab_residual_reinmax.weights.h5', 'discrete_vae-relaxed.weights.h5']
    """
    if not WEIGHTS_DIR.is_dir():
        return []
    manifests = []
    for path in sorted(WEIGHTS_DIR.glob("*.json")):
        manifest = read_manifest(path)
        if model is None or manifest.get("model") == model:
            manifests.append(manifest)
    return manifests


def check_dab_residual(dab_residual, estimator):
    """Checks the `dab_residual` argument of a zoo model: a bool, `True` only for `estimator="dab"` by name.

    Args:
        dab_residual: The argument (`True`: a residual DAB, the op's straight-through surrogate plus a
            learned correction that starts at zero; `False`: the paper's DAB, as the shipped weights).
        estimator: The model's estimator: a name or an `Estimator` instance.

    Returns:
        `dab_residual`, a bool.

    Raises:
        ValueError: if `dab_residual` is not a bool, or is `True` with another estimator (an `Estimator`
            object brings its own settings).

    Examples:
        >>> check_dab_residual(True, "dab"), check_dab_residual(False, "relaxed")
        (True, False)
        >>> check_dab_residual(True, "relaxed")
        Traceback (most recent call last):
        ...
        ValueError: `dab_residual=True` needs estimator='dab' (given by name). Received: estimator='relaxed'
    """
    if not isinstance(dab_residual, bool):
        raise ValueError(f"`dab_residual` must be a bool. Received: dab_residual={dab_residual!r}")
    if dab_residual and not (isinstance(estimator, str) and estimator_key(estimator) == "dab"):
        raise ValueError(
            f"`dab_residual=True` needs estimator='dab' (given by name). Received: estimator={estimator!r}"
        )
    return dab_residual


#: The base gradient of the discrete VAEs' hard-sample estimators (`sample_gradient=`): the relaxation's
#: (straight-through Gumbel-Softmax / binary Concrete) or ReinMax's.
SAMPLE_GRADIENTS = ("relaxation", "reinmax")


def check_sample_gradient(sample_gradient, estimator, dab_residual=False):
    """Checks the `sample_gradient` argument of a discrete VAE: ReinMax's base only where there is a base.

    Args:
        sample_gradient: `"relaxation"` or `"reinmax"`.
        estimator: The model's estimator: a name or an `Estimator` instance.
        dab_residual: Whether the DAB is the residual one. Defaults to `False`.

    Returns:
        `sample_gradient`.

    Raises:
        ValueError: if `sample_gradient` is not one of `SAMPLE_GRADIENTS`, or is `"reinmax"` with an estimator
            other than `"straight_through"` or the residual DAB given by name.

    Examples:
        >>> check_sample_gradient("reinmax", "dab", dab_residual=True)
        'reinmax'
        >>> check_sample_gradient("reinmax", "relaxed")
        Traceback (most recent call last):
        ...
        ValueError: `sample_gradient='reinmax'` sets the base gradient of ... Received: estimator='relaxed', dab_residual=False
    """
    sample_gradient = _validation.check_one_of("sample_gradient", sample_gradient, SAMPLE_GRADIENTS)
    key = estimator_key(estimator) if isinstance(estimator, str) else None
    if sample_gradient != "relaxation" and not (key == "straight_through" or (key == "dab" and dab_residual)):
        raise ValueError(
            f"`sample_gradient={sample_gradient!r}` sets the base gradient of 'straight_through' and of the "
            "residual DAB (estimator='dab', dab_residual=True), given by name. "
            f"Received: estimator={estimator!r}, dab_residual={dab_residual!r}"
        )
    return sample_gradient


#: The codes a discrete VAE's decoder can be fitted to in training (`decoder_codes=`): the sampling layer's
#: training output (`"auto"`), the hard sample, or the relaxed sample at the layer's τ.
DECODER_CODES = ("auto", "hard", "relaxed")


def check_decoder_codes(decoder_codes, estimator, dab_residual=False):
    """Checks the `decoder_codes` argument of a discrete VAE: relaxed codes only with a relaxation's τ.

    An estimator given by name is checked here; an `Estimator` object when its layer is built.

    Args:
        decoder_codes: `"auto"`, `"hard"` or `"relaxed"`.
        estimator: The model's estimator: a name or an `Estimator` instance.
        dab_residual: Whether the DAB is the residual one. Defaults to `False`.

    Returns:
        `decoder_codes`.

    Raises:
        ValueError: if `decoder_codes` is not one of `DECODER_CODES`, or is `"relaxed"` with the paper's DAB
            (its approximator has no temperature).

    Examples:
        >>> check_decoder_codes("relaxed", "straight_through")
        'relaxed'
        >>> check_decoder_codes("relaxed", "dab")
        Traceback (most recent call last):
        ...
        ValueError: `decoder_codes='relaxed'` needs a sampling layer with a temperature ... Received: estimator='dab', dab_residual=False
    """
    decoder_codes = _validation.check_one_of("decoder_codes", decoder_codes, DECODER_CODES)
    paper_dab = isinstance(estimator, str) and estimator_key(estimator) == "dab" and not dab_residual
    if decoder_codes == "relaxed" and paper_dab:
        raise _relaxed_codes_error(estimator, dab_residual)
    return decoder_codes


def canonical_decoder_codes(decoder_codes, estimator):
    """`decoder_codes` as runs and weights record it: `"auto"` where it names the sampler's own codes.

    With a named estimator, `"relaxed"` (for `"relaxed"`) or `"hard"` (for `"straight_through"` and
    `"dab"`) fits the decoder to the codes `"auto"` gives it, with the same loss and gradients: the same
    run, whose weights are those of `"auto"`. An `Estimator` object keeps its choice.

    Args:
        decoder_codes: A checked `decoder_codes` (`check_decoder_codes`).
        estimator: The model's estimator: a name or an `Estimator` instance.

    Returns:
        `"auto"`, `"hard"` or `"relaxed"`.

    Examples:
        >>> canonical_decoder_codes("relaxed", "relaxed"), canonical_decoder_codes("hard", "ste")
        ('auto', 'auto')
        >>> canonical_decoder_codes("relaxed", "straight_through")
        'relaxed'
    """
    if isinstance(estimator, str):
        own = "relaxed" if estimator_key(estimator) == "relaxed" else "hard"
        if decoder_codes == own:
            return "auto"
    return decoder_codes


def _relaxed_codes_error(estimator, dab_residual):
    """The `ValueError` of `decoder_codes="relaxed"` with a sampling layer that has no temperature."""
    return ValueError(
        "`decoder_codes='relaxed'` needs a sampling layer with a temperature (estimator='relaxed', "
        "'straight_through' or the residual DAB). "
        f"Received: estimator={estimator!r}, dab_residual={dab_residual!r}"
    )


#: Arguments of a weights configuration that may be left out when they have their default (`check_config`
#: compares the default with the other side's value). `dab_residual` is written only when `True`,
#: `sample_gradient` only when not `"relaxation"` and `decoder_codes` only when not `"auto"`, so the
#: manifests written before they existed keep matching.
CONFIG_DEFAULTS = {"dab_residual": False, "sample_gradient": "relaxation", "decoder_codes": "auto"}

#: Arguments of a weights configuration that configure the estimator or how it trains the network, not the
#: network: they are not compared when the weights were trained with another estimator (its state is not
#: loaded; fine-tuning with another estimator may train differently).
ESTIMATOR_CONFIG = ("approximator_units", "dab_residual", "sample_gradient", "decoder_codes")


def _normalize(value):
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_config(manifest, config, source):
    """Raises `ValueError` naming every argument of `config` that differs from the manifest's.

    Only the keys present in both are compared, and those of `CONFIG_DEFAULTS` present in either (the
    other side counts as the default); integral floats equal ints and tuples equal lists.

    Args:
        manifest: A manifest dict; its `config` entry holds the arguments the weights were trained with.
        config: The arguments of the model being loaded.
        source: Where the weights come from, for the message (e.g. `"at runs/sorter-dab.weights.h5"`).

    Raises:
        ValueError: if an argument differs (the message lists each one with both values).

    Examples:
        >>> manifest = {"config": {"latent_units": 256, "margin": 0.5}}
        >>> check_config(manifest, {"latent_units": 256, "margin": 0.5, "name": "mine"}, "at w.h5")
        >>> check_config(manifest, {"latent_units": 128}, "at w.h5")
        Traceback (most recent call last):
        ...
        ValueError: The weights at w.h5 were trained with ...: latent_units=128 (weights: 256)...
        >>> check_config(manifest, {"latent_units": 256, "dab_residual": True}, "at w.h5")
        Traceback (most recent call last):
        ...
        ValueError: The weights at w.h5 were trained with ...: dab_residual=True (weights: False)...
    """
    trained = manifest.get("config", {})
    named = {k: v for k, v in CONFIG_DEFAULTS.items() if k in trained or k in config}
    trained, config = {**named, **trained}, {**named, **config}
    diffs = [
        f"{key}={config[key]!r} (weights: {trained[key]!r})"
        for key in sorted(trained)
        if key in config and _normalize(config[key]) != _normalize(trained[key])
    ]
    if diffs:
        raise ValueError(
            f"The weights {source} were trained with a different configuration: {', '.join(diffs)}. "
            "Build the model with the weights' configuration, or pass weights=None (--weights none) to start from scratch."
        )


def verify_sha256(weights_path, manifest):
    """Raises `ValueError` if the file's sha256 differs from the manifest's.

    Args:
        weights_path: Path of the weight file.
        manifest: Its manifest dict (a missing `sha256` entry counts as a mismatch).

    Raises:
        ValueError: on a mismatch (the message shows both digests).

    Examples:
        >>> path = pretrained_path("sorter", "dab")
        >>> verify_sha256(path, read_manifest(manifest_path(path)))
        >>> verify_sha256(path, {"sha256": "0" * 64})
        Traceback (most recent call last):
        ...
        ValueError: sha256 mismatch for ...
    """
    expected = manifest.get("sha256")
    actual = zoo_data.sha256(weights_path)
    if expected != actual:
        raise ValueError(
            f"sha256 mismatch for {weights_path}: the manifest says {expected}, the file has {actual}. "
            "The file is damaged or was replaced; reinstall the package or retrain."
        )


def pretrained_path(model, estimator):
    """Path of the shipped weights of `model` trained with `estimator`.

    Args:
        model: Registry name, e.g. `"sorter"`.
        estimator: Key of the weights (`WEIGHT_KEYS`): `"dab"`, `"dab_residual"`, `"straight_through"`
            or `"relaxed"`.

    Returns:
        The `pathlib.Path` of the `.weights.h5` file in `WEIGHTS_DIR`.

    Raises:
        ValueError: if no such weights ship with the package (the message lists the ones that do).

    Examples:
        >>> pretrained_path("sorter", "dab").name
        'sorter-dab.weights.h5'
        >>> pretrained_path("sorter", "relaxed")
        Traceback (most recent call last):
        ...
        ValueError: No pretrained weights ship for model 'sorter' with estimator='relaxed'. ...['dab', 'dab_residual', 'straight_through']...
    """
    path = WEIGHTS_DIR / weights_filename(model, estimator)
    if not path.is_file():
        available = shipped_keys(model)
        raise ValueError(
            f"No pretrained weights ship for model {model!r} with estimator={estimator!r}. "
            f"Shipped estimators: {available or 'none'}. Pass weights=None (--weights none: random initialization) "
            "or the path of a .weights.h5 file."
        )
    return path


def load(model, weights, model_name, estimator, config):
    """Loads `weights` (`"pretrained"`, an estimator key, `None` or a path) into the built Keras `model`.

    Weights trained with another estimator load too (fine-tuning a zoo model with another estimator):
    the network's weights load, the other estimator's state (e.g. DAB's approximator) is skipped, and
    this model's estimator state starts fresh, with one warning per hard layer
    (`dab_keras.layers.DiscreteLayer.load_own_variables`).

    Args:
        model: A built Keras model.
        weights: `"pretrained"` (the shipped file for `estimator`, and for `"dab"` with
            `config["dab_residual"]` the residual DAB's), a key of `WEIGHT_KEYS` (`"dab"`,
            `"dab_residual"`, `"straight_through"`, `"relaxed"`: the shipped file trained with that
            estimator), `None` (keep the initialization), or the path of a `.weights.h5` file.
        model_name: Registry name of the model (e.g. `"sorter"`).
        estimator: Estimator key (`"dab"`, `"straight_through"`, `"relaxed"`), or `None` for a custom
            estimator object.
        config: Constructor arguments that the weights must match (`ESTIMATOR_CONFIG`, such as
            `approximator_units` and `dab_residual`, only when the weights were trained with the same
            estimator; `dab_residual` only when `True`, see `CONFIG_DEFAULTS`).

    Returns:
        The manifest of the loaded weights (an empty dict when there is none), or `None` for `weights=None`.

    Raises:
        ValueError: for `weights="pretrained"` with `estimator=None` or without shipped weights, a
            `weights` of another type, a sha256 mismatch, a manifest of another model or configuration,
            or weights that do not fit the model.
        FileNotFoundError: if `weights` is a path with no file.

    Examples:
        >>> from dab_keras.zoo import Sorter
        >>> model = Sorter(weights=None)
        >>> config = {"length": 10, "hidden_units": [128, 128], "latent_units": 256, "margin": 0.5,
        ...           "approximator_units": [128]}
        >>> manifest = load(model, "pretrained", "sorter", "dab", config)
        >>> manifest["model"], manifest["estimator"]
        ('sorter', 'dab')
        >>> load(model, None, "sorter", "dab", config) is None  # keeps the current weights
        True

        The straight-through sorter's weights in a DAB sorter (its approximator starts fresh):

        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     manifest = load(model, "straight_through", "sorter", "dab", config)
        >>> manifest["estimator"], [str(w.message)[:15] for w in caught]
        ('straight_through', ["Layer 'sign' (S"])
    """
    if weights is None:
        return None
    if isinstance(weights, str) and weights in ("pretrained", *WEIGHT_KEYS):
        trained_with = (
            weights_key(estimator, config.get("dab_residual", False), config.get("sample_gradient", "relaxation"))
            if weights == "pretrained" else weights
        )
        if trained_with is None:
            raise ValueError(
                "weights='pretrained' needs an estimator given by name ('dab', 'straight_through' or "
                "'relaxed'); a custom estimator object has no shipped weights. Pass weights=None, the "
                "name of the estimator whose shipped weights to load (e.g. weights='straight_through'), "
                "or a path."
            )
        path = pretrained_path(model_name, trained_with)
        source = f"{weights!r} ({path.name})"
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                "`weights` must be 'pretrained', an estimator name, None or the path of a .weights.h5 file. "
                f"No file at {path}."
            )
        source = f"at {path}"
    else:
        raise ValueError(
            f"`weights` must be 'pretrained', a weights key {WEIGHT_KEYS}, None "
            f"or the path of a .weights.h5 file. Received: {weights!r}"
        )
    manifest = {}
    mpath = manifest_path(path)
    if mpath.is_file():
        manifest = read_manifest(mpath)
        verify_sha256(path, manifest)
        if manifest.get("model") not in (None, model_name):
            raise ValueError(f"The weights {source} belong to model {manifest['model']!r}, not {model_name!r}.")
        trained, network = manifest, config
        if manifest.get("estimator") != estimator:  # estimator state: not loaded across estimators
            network = {k: v for k, v in config.items() if k not in ESTIMATOR_CONFIG}
            trained = {"config": {k: v for k, v in manifest.get("config", {}).items() if k not in ESTIMATOR_CONFIG}}
        check_config(trained, network, source)
    _check_hdf5(path)
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"The weights {source} do not fit this {model_name} model (configuration {config}, "
            f"estimator={estimator!r}): {_mismatch(e)}. Were they saved from another model or "
            "configuration? Pass that model's weights, or weights=None (--weights none) for random "
            "initialization."
        ) from None
    except OSError as e:
        raise ValueError(f"The weights file {path} cannot be read (damaged or truncated?): {_first_line(e)}") from None
    return manifest


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_hdf5(path):
    # A clear message for an empty, truncated or foreign file before h5py's own.
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(len(_HDF5_SIGNATURE))
    if size == 0:
        raise ValueError(f"The weights file {path} is empty (0 bytes). Copy it again or retrain.")
    if head != _HDF5_SIGNATURE:
        raise ValueError(f"The weights file {path} is not an HDF5 .weights.h5 file ({size} bytes, starting {head!r}).")


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _mismatch(error):
    # Keras's message dumps whole tensors; keep the layer and the two shapes.
    text = str(error)
    match = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    layer = re.search(r"Target variable: <Variable path=([^,>]+)", text)
    if match:
        where = f"{layer.group(1)} has shape {match.group(1)}" if layer else f"a weight has shape {match.group(1)}"
        return f"{where}, the file holds {match.group(2)}"
    return _first_line(error)[:300]
