"""The discrete VAE's evaluation protocol: reproducible test bounds in nats per image.

Test metrics of the zoo's VAEs (`evaluate_bounds`, behind `VAETask.evaluate` and the manifests):

- `neg_elbo` (the headline): the mean single-sample negative ELBO on the 10,000 test images binarized
  dynamically once (`dab_keras.zoo.binarized_mnist.binarized_test_sets`), the model's latent noise drawn
  from `keras.random.SeedGenerator(EVAL_SEED)` in batches of `EVAL_BATCH` images (`mean_bound`), so
  repeated evaluations of the same weights agree;
- `neg_elbo_threshold`: the same on the test set binarized at 0.5;
- `neg_iwae_k<k>`: the importance-weighted bound of k samples on the dynamically binarized test images.
"""

import keras
import numpy as np
from keras import ops

from dab_keras.zoo import binarized_mnist

#: Seed of the latent noise (`keras.random.SeedGenerator`) in evaluation.
EVAL_SEED = 1611
#: Images per batch in evaluation (the latent noise of a batch depends on it).
EVAL_BATCH = 1000


def mean_bound(fn, images, batch_size=EVAL_BATCH, seed=EVAL_SEED, **kwargs):
    """Mean over `images` of `fn(x, seed=generator, **kwargs)` (e.g. `model.neg_elbo`), batch by batch.

    The latent noise comes from one `keras.random.SeedGenerator(seed)` for the whole pass, so the result
    is reproducible for a given batch size.

    Args:
        fn: Function `(x, seed=generator, **kwargs) -> (B,)` values, e.g. `model.neg_elbo`.
        images: Array of images (any length N >= 1).
        batch_size: Images per call of `fn`. Defaults to `EVAL_BATCH` (1,000).
        seed: Seed of the generator. Defaults to `EVAL_SEED`.
        **kwargs: Further arguments of `fn` (e.g. `k` of `neg_iwae`).

    Returns:
        The mean as a Python float (summed in float64).

    Examples:
        >>> import numpy as np
        >>> mean_bound(lambda x, seed: np.arange(len(x), dtype="float32"), np.zeros((5, 28, 28, 1)),
        ...            batch_size=2)  # batches of 2, 2 and 1: values 0, 1, 0, 1, 0
        0.4
    """
    generator = keras.random.SeedGenerator(seed)
    total = 0.0
    for start in range(0, len(images), batch_size):
        values = ops.convert_to_numpy(fn(images[start : start + batch_size], seed=generator, **kwargs))
        total += float(np.sum(values.astype("float64")))
    return total / len(images)


def evaluate_bounds(model, data="tfds", batch_size=None, iwae_k=100, iwae_images=10_000):
    """Test bounds of a discrete VAE in nats per image (lower is better), reproducible for given weights.

    The backends' random streams differ: TensorFlow and JAX give values about 0.2 nats apart.

    Args:
        model: A `dab_keras.zoo.vae_model.DiscreteVAEModel` (anything with `neg_elbo` and `neg_iwae`).
        data: MNIST source (`"tfds"` or an `.npz` path). Defaults to `"tfds"`.
        batch_size: Images per batch of the ELBO (the IWAE uses a tenth). Defaults to `None`
            (`EVAL_BATCH`).
        iwae_k: Samples of the importance-weighted bound; `0` skips it. Defaults to `100`.
        iwae_images: Dynamically binarized test images of the importance-weighted bound (the first
            ones). Defaults to `10_000`.

    Returns:
        A dict with `neg_elbo`, `neg_elbo_threshold`, `neg_iwae_k<k>` and `iwae_images` (when
        `iwae_k` > 0), and `test_images`.

    Examples:
        >>> import os, tempfile
        >>> import numpy as np
        >>> from dab_keras.zoo import DiscreteVAE
        >>> rng = np.random.default_rng(0)
        >>> split = lambda n: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "mnist.npz")
        ...     np.savez(path, x_train=split(4), y_train=np.zeros(4, np.uint8), x_test=split(6),
        ...              y_test=np.zeros(6, np.uint8))
        ...     metrics = evaluate_bounds(DiscreteVAE(weights=None), data=path, iwae_k=2)
        >>> sorted(metrics), metrics["test_images"]
        (['iwae_images', 'neg_elbo', 'neg_elbo_threshold', 'neg_iwae_k2', 'test_images'], 6)
    """
    sets = binarized_mnist.binarized_test_sets(data)
    batch_size = batch_size or EVAL_BATCH
    metrics = {
        "neg_elbo": mean_bound(model.neg_elbo, sets["dynamic"], batch_size),
        "neg_elbo_threshold": mean_bound(model.neg_elbo, sets["threshold"], batch_size),
    }
    if iwae_k:
        images = sets["dynamic"][:iwae_images]
        metrics[f"neg_iwae_k{iwae_k}"] = mean_bound(model.neg_iwae, images, max(1, batch_size // 10), k=iwae_k)
        metrics["iwae_images"] = int(len(images))
    metrics["test_images"] = int(len(sets["dynamic"]))
    return metrics
