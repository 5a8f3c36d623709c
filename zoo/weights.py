"""Weight files of the zoo and their manifests.

Every shipped weight file `weights/<model>-<estimator>.weights.h5` has a manifest
`weights/<model>-<estimator>.json` beside it:

```json
{"model": "sorter", "estimator": "dab", "weights": "sorter-dab.weights.h5", "sha256": "...",
 "config": {...constructor arguments...}, "metrics": {...test metrics...},
 "command": "dab-zoo train sorter --estimator dab ...", "data": "...", "seed": 0, ...}
```

Loading checks the file's sha256 against the manifest and the model's configuration against the one the
weights were trained with, and fails with a message that names both when they differ. A path given by the
user is loaded as is; when a manifest with the same stem lies beside it (as `dab-zoo train` writes one),
it is checked the same way.
"""

import json
import os
from pathlib import Path

from dab_keras.zoo import data as zoo_data

#: Folder of the weight files shipped with the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_SUFFIX = ".weights.h5"


def weights_filename(model, estimator):
    """File name of the weights of `model` trained with `estimator`."""
    return f"{model}-{estimator}{_SUFFIX}"


def manifest_path(weights_path):
    """Path of the manifest that belongs to `weights_path` (`x.weights.h5` → `x.json`)."""
    weights_path = Path(weights_path)
    name = weights_path.name
    stem = name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else weights_path.stem
    return weights_path.with_name(stem + ".json")


def read_manifest(path):
    """Reads a manifest JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_manifest(weights_path, **fields):
    """Writes the manifest of `weights_path` (adds its file name and sha256) and returns its path."""
    weights_path = Path(weights_path)
    manifest = {"weights": weights_path.name, "sha256": zoo_data.sha256(weights_path), **fields}
    path = manifest_path(weights_path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    return path


def shipped_manifests(model=None):
    """Manifests of the shipped weight files, optionally of one model, sorted by model and estimator."""
    if not WEIGHTS_DIR.is_dir():
        return []
    manifests = []
    for path in sorted(WEIGHTS_DIR.glob("*.json")):
        manifest = read_manifest(path)
        if model is None or manifest.get("model") == model:
            manifests.append(manifest)
    return manifests


def _normalize(value):
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_config(manifest, config, source):
    """Raises `ValueError` naming every argument of `config` that differs from the manifest's."""
    trained = manifest.get("config", {})
    diffs = [
        f"{key}={config[key]!r} (weights: {trained[key]!r})"
        for key in sorted(trained)
        if key in config and _normalize(config[key]) != _normalize(trained[key])
    ]
    if diffs:
        raise ValueError(
            f"The weights {source} were trained with a different configuration: {', '.join(diffs)}. "
            "Build the model with the weights' configuration, or pass weights=None to train from scratch."
        )


def verify_sha256(weights_path, manifest):
    """Raises `ValueError` if the file's sha256 differs from the manifest's."""
    expected = manifest.get("sha256")
    actual = zoo_data.sha256(weights_path)
    if expected != actual:
        raise ValueError(
            f"sha256 mismatch for {weights_path}: the manifest says {expected}, the file has {actual}. "
            "The file is damaged or was replaced; reinstall the package or retrain."
        )


def pretrained_path(model, estimator):
    """Path of the shipped weights of `model` trained with `estimator`.

    Raises:
        ValueError: if no such weights ship with the package (the message lists the ones that do).
    """
    path = WEIGHTS_DIR / weights_filename(model, estimator)
    if not path.is_file():
        available = [m["estimator"] for m in shipped_manifests(model)]
        raise ValueError(
            f"No pretrained weights ship for model {model!r} with estimator={estimator!r}. "
            f"Shipped estimators: {available or 'none'}. Pass weights=None (random initialization) "
            "or the path of a .weights.h5 file."
        )
    return path


def load(model, weights, model_name, estimator, config):
    """Loads `weights` (`"pretrained"`, `None` or a path) into the built Keras `model`.

    Args:
        model: A built Keras model.
        weights: `"pretrained"` (the shipped file for `estimator`), `None` (keep the initialization), or
            the path of a `.weights.h5` file.
        model_name: Registry name of the model (e.g. `"sorter"`).
        estimator: Estimator key (`"dab"`, `"straight_through"`, `"relaxed"`), or `None` for a custom
            estimator object (which has no pretrained weights).
        config: Constructor arguments that the weights must match.

    Returns:
        The manifest of the loaded weights (an empty dict when there is none), or `None` for `weights=None`.
    """
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "pretrained":
        if estimator is None:
            raise ValueError(
                "weights='pretrained' needs an estimator given by name ('dab', 'straight_through' or "
                "'relaxed'); a custom estimator object has no shipped weights. Pass weights=None or a path."
            )
        path = pretrained_path(model_name, estimator)
        source = f"'pretrained' ({path.name})"
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"`weights` must be 'pretrained', None or the path of a .weights.h5 file. No file at {path}."
            )
        source = f"at {path}"
    else:
        raise ValueError(
            f"`weights` must be 'pretrained', None or the path of a .weights.h5 file. Received: {weights!r}"
        )

    manifest = {}
    mpath = manifest_path(path)
    if mpath.is_file():
        manifest = read_manifest(mpath)
        verify_sha256(path, manifest)
        if manifest.get("model") not in (None, model_name):
            raise ValueError(f"The weights {source} belong to model {manifest['model']!r}, not {model_name!r}.")
        check_config(manifest, {**config, "estimator": estimator}, source)
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"The weights {source} do not fit this {model_name} model (configuration {config}, "
            f"estimator={estimator!r}): {e}"
        ) from e
    return manifest
