"""dab_keras.zoo: pretrained models that use dab_keras layers, with their data and training recipes.

Installed as `dab_keras.zoo` (the source lives in the repository's top-level `zoo/` folder).

- Models: `Sorter` (the DAB paper's 10-sort network), `MNISTClassifier` (a CNN with a binary code),
  `DiscreteVAE` (a VAE with a categorical or binary latent on binarized MNIST).
- `list_models()`, `train`, `evaluate`: the registry and the trainer behind the `dab-zoo` command.
- `data`: MNIST from TensorFlow Datasets or a local `.npz`, binarization, synthetic sorting batches.
- `weights`: shipped weight files, manifests and sha256 checks.

Examples:
    >>> from dab_keras import zoo
    >>> zoo.list_models()
    ['binary_vae', 'discrete_vae', 'mnist_classifier', 'sorter']
    >>> sorter = zoo.Sorter()  # the shipped DAB weights, checked against their sha256
    >>> x, y = zoo.data.sort_batch(2, seed=0)
    >>> sorter.predict(x, verbose=0).argmax(-1).shape  # row i: the index of the i-th smallest value
    (2, 10)
"""

from dab_keras.zoo import classifier as _classifier
from dab_keras.zoo import data, registry, weights
from dab_keras.zoo import sorter as _sorter
from dab_keras.zoo import vae as _vae
from dab_keras.zoo.classifier import MNISTClassifier
from dab_keras.zoo.registry import list_models
from dab_keras.zoo.sorter import Sorter
from dab_keras.zoo.vae import DiscreteVAE

registry.register(_sorter.SorterTask())
registry.register(_vae.VAETask("categorical"))
registry.register(_vae.VAETask("binary"))
registry.register(_classifier.ClassifierTask())

from dab_keras.zoo.training import evaluate, train  # noqa: E402

__all__ = ["DiscreteVAE", "MNISTClassifier", "Sorter", "data", "evaluate", "list_models", "registry", "train", "weights"]
