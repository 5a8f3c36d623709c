"""dab_keras.zoo: pretrained models that use dab_keras layers, with their data and training recipes.

Installed as `dab_keras.zoo` (the source lives in the repository's top-level `zoo/` folder).

- `data`: MNIST from TensorFlow Datasets or a local `.npz`, binarization, synthetic sorting batches.
"""

from dab_keras.zoo import data

__all__ = ["data"]
