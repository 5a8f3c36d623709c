r"""`MNISTClassifier`: a small convolutional MNIST classifier with a binary code before its last layer.

A 28×28 grey-scale image goes through blocks of 3×3 ReLU convolutions and 2×2 max-pooling, dropout, a
`Dense(features, tanh)` layer and a `Sign` layer that binarizes it (trained with the chosen estimator),
then a linear layer from the code to the 10 class logits:

$$ c = \operatorname{sign}\big(\tanh(W_f\, \phi(x) + b_f)\big) \in \{-1, 1\}^{F}, \qquad
   \text{logits} = W_o\, c + b_o, $$

where φ is the convolutional feature extractor and F = `features`. Every class decision therefore rests on
F bits (a hard, non-differentiable bottleneck), which `include_top=False` exposes as features for a new
head. The loss is the softmax cross-entropy of the logits; the headline metric is test accuracy.

Reference: Ramapuram & Webb, "Improving Discrete Latent Representations With Differentiable Approximation
Bridges", 2019, arXiv:1905.03658 (DAB, the default estimator); Bengio, Léonard & Courville, "Estimating or
Propagating Gradients Through Stochastic Neurons for Conditional Computation", 2013, arXiv:1308.3432
(straight-through).
"""

import keras
import numpy as np

import dab_keras as dk
from dab_keras import _validation
from dab_keras.zoo import codes as zoo_codes
from dab_keras.zoo import data as zoo_data
from dab_keras.zoo import metrics as zoo_metrics
from dab_keras.zoo import task as zoo_task
from dab_keras.zoo import weights as zoo_weights

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)


def MNISTClassifier(
    estimator="dab",
    filters=(32, 64),
    convs_per_block=1,
    features=128,
    margin=0.0,
    dropout=0.25,
    approximator_units=(128,),
    include_top=True,
    weights="pretrained",
    name="mnist_classifier",
    dab_residual=False,
):
    """Builds the binary-code MNIST classifier: `(B, 28, 28, 1)` images in [0, 1] → `(B, 10)` logits.

    Layers (all named, the weight files depend on it): for each block b = 1, 2, ... of `filters`,
    `convs_per_block` convolutions `conv{b}_{i}` (3×3, same padding, ReLU) and a 2×2 max-pool `pool{b}`;
    then `flatten`, `dropout`, `features` (Dense, tanh), `sign` (the binary code) and `logits` (Dense).

    To reuse the code as features, build the base with `include_top=False`, freeze it and put a new head
    on it. Freeze the whole base with `base.trainable = False`, or single layers (e.g.
    `base.get_layer("conv1_0").trainable = False`) to fine-tune the rest. Keras 3's `fit` runs every
    layer of a functional model in training mode, frozen ones included (an explicit
    `base(x, training=False)` inside a functional model is overridden by `fit`'s `training=True`), so:

    - build the base with `dropout=0.0` (dropout is not part of the weights' configuration);
    - with `"dab"` and `"straight_through"` weights the code stays hard in training (a frozen `"dab"`
      base adds no loss: its approximator is frozen too, and its error is only logged); a `"relaxed"`
      base outputs its tanh relaxation in training;
    - for an exactly frozen base, or to train a head fastest, fit the head on `base.predict(x)` codes
      and stack it on `base.output` afterwards.

    Args:
        estimator: `"dab"`, `"straight_through"`, `"relaxed"` or an `Estimator` for the `Sign` layer.
            Defaults to `"dab"` (with a dense approximator of `approximator_units` over the code).
        filters: Number of filters of each convolutional block (one int per block). Defaults to
            `(32, 64)`.
        convs_per_block: Convolutions per block, >= 1. Defaults to `1`.
        features: Width F of the tanh layer binarized by `Sign` (the code length). Defaults to `128`.
        margin: `Sign` margin m >= 0 (values of the tanh layer within it map to 0; `0.0` gives a binary
            code in {-1, 1}). Defaults to `0.0`.
        dropout: Dropout rate in [0, 1) before the `features` layer (training only). Defaults to `0.25`.
        approximator_units: Hidden widths of the DAB approximator (estimator `"dab"` only). Defaults to
            `(128,)`.
        dab_residual: With `estimator="dab"`: `True` builds the residual DAB (the approximator corrects
            the op's straight-through surrogate and starts at zero, so training starts as
            straight-through), `False` the paper's DAB (the approximator alone). Both kinds of DAB weights
            ship: `weights="pretrained"` loads the kind chosen here; weights load only into a model of the
            same choice. Defaults to `False`.
        include_top: If `False`, the model ends at the `(B, features)` code of the `sign` layer.
            Defaults to `True`.
        weights: `"pretrained"` (shipped weights for `estimator`), the name of another estimator whose
            shipped weights to fine-tune (e.g. `"straight_through"`), `None`, or a `.weights.h5` path.
            Defaults to `"pretrained"`.
        name: Model name. Defaults to `"mnist_classifier"`.

    Returns:
        A `keras.Model` (uncompiled).

    Raises:
        ValueError: for an invalid argument (the message names it), or weights trained with another
            configuration.

    Examples:
        >>> import keras
        >>> from dab_keras.zoo import MNISTClassifier
        >>> model = MNISTClassifier(weights=None)  # or weights="pretrained" / a .weights.h5 path
        >>> model.output_shape
        (None, 10)
        >>> # Fine-tuning: a frozen binary-code base and a new head (e.g. for another 10-class task).
        >>> base = MNISTClassifier(include_top=False, dropout=0.0, weights=None)  # e.g. weights="pretrained"
        >>> base.trainable = False
        >>> head = keras.layers.Dense(10, name="new_logits")
        >>> model = keras.Model(base.input, head(base.output))
        >>> len(model.trainable_weights)  # the new head's kernel and bias only
        2
        >>> model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """
    filters = tuple(_validation.check_int("filters", f, 1) for f in _as_tuple(filters, "filters"))
    if not filters:
        raise ValueError(f"`filters` must hold at least one int. Received: filters={filters!r}")
    convs_per_block = _validation.check_int("convs_per_block", convs_per_block, 1)
    features = _validation.check_int("features", features, 1)
    margin = _validation.check_non_negative_float("margin", margin)
    if margin >= 1.0:
        raise ValueError(
            f"`margin` must be in [0, 1) (the code binarizes a tanh output). Received: margin={margin!r}"
        )
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be a float in [0, 1). Received: dropout={dropout!r}")
    approximator_units = tuple(
        _validation.check_int("approximator_units", u, 1)
        for u in _as_tuple(approximator_units, "approximator_units")
    )
    if not isinstance(include_top, bool):
        raise ValueError(f"`include_top` must be a bool. Received: include_top={include_top!r}")
    key = zoo_weights.estimator_key(estimator)
    dab_residual = zoo_weights.check_dab_residual(dab_residual, estimator)
    if len(filters) > 4:
        raise ValueError(
            f"`filters` may hold at most 4 blocks (each halves the 28×28 image). Received: filters={filters!r}"
        )

    inputs = keras.Input(IMAGE_SHAPE, name="image")
    h = inputs
    for b, width in enumerate(filters, start=1):
        for i in range(convs_per_block):
            h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{b}_{i}")(h)
        h = keras.layers.MaxPooling2D(2, name=f"pool{b}")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dropout(float(dropout), name="dropout")(h)
    h = keras.layers.Dense(features, activation="tanh", name="features")(h)
    code = dk.layers.Sign(
        margin=margin,
        estimator=zoo_codes.code_estimator(estimator, features, approximator_units, residual=dab_residual),
        name="sign",
    )(h)
    outputs = code
    if include_top:
        outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(code)
    model = keras.Model(inputs, outputs, name=name)

    # The arguments the weights must match: shapes (filters, blocks, code and approximator widths) and
    # the meaning of the code (margin). Dropout is free (it is off at inference).
    config = {
        "filters": list(filters),
        "convs_per_block": convs_per_block,
        "features": features,
        "margin": float(margin),
    }
    if key == "dab":
        config["approximator_units"] = list(approximator_units)
    if dab_residual:  # left out when False, as in the manifests of the paper's DAB
        config["dab_residual"] = True
    if not include_top and weights is not None:
        # Load the full model's weights, then keep the layers up to the code.
        full = MNISTClassifier(
            estimator,
            filters=filters,
            convs_per_block=convs_per_block,
            features=features,
            margin=margin,
            dropout=dropout,
            approximator_units=approximator_units,
            include_top=True,
            weights=weights,
            name=name,
            dab_residual=dab_residual,
        )
        return zoo_codes.copy_layer_weights(model, full)
    zoo_weights.load(model, weights, "mnist_classifier", key, config)
    return model


def _as_tuple(units, name):
    if isinstance(units, (int, np.integer)) and not isinstance(units, bool):
        return (units,)
    if isinstance(units, (list, tuple)):
        return tuple(units)
    raise ValueError(f"`{name}` must be an int or a tuple of ints. Received: {name}={units!r}")


def random_shift(images, max_shift, rng):
    """Shifts each image by its own random offset of up to `max_shift` pixels along each axis (zero fill).

    Offsets are drawn uniformly from {-max_shift, ..., max_shift} per image and axis; pixels shifted
    in from outside the image are 0.

    Args:
        images: `(B, H, W, C)` array.
        max_shift: Largest shift in pixels, an int >= 0 (`0` returns `images` itself).
        rng: A `numpy.random.Generator`.

    Returns:
        An array of `images`' shape and dtype.

    Examples:
        >>> import numpy as np
        >>> images = np.zeros((2, 28, 28, 1), "float32")
        >>> images[:, 14, 14] = 1.0
        >>> shifted = random_shift(images, 2, np.random.default_rng(0))
        >>> shifted.shape, shifted.sum(axis=(1, 2, 3)).tolist()  # each single pixel moved, not lost
        ((2, 28, 28, 1), [1.0, 1.0])
    """
    if max_shift == 0:
        return images
    n, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(height)
    cols = dx[:, None] + np.arange(width)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


class ShiftedMNIST(keras.utils.PyDataset):
    """Shuffled batches of training images, each shifted by up to `max_shift` pixels, for `model.fit`.

    Epoch `e` visits the images in the order of NumPy's generator seeded with `(seed, e)`; batch `i` of
    epoch `e` is shifted with the generator seeded with `(seed, e, i)`. So a run is reproducible and a
    resumed run continues where it stopped. Works on every backend (NumPy only).

    Args:
        images: `(N, 28, 28, 1)` float images.
        labels: `(N,)` int labels.
        batch_size: Images per batch (the last batch of an epoch may be smaller).
        max_shift: Largest shift in pixels (`random_shift`). Defaults to `2`.
        seed: Seed of the order and the shifts. Defaults to `0`.
        initial_epoch: Epoch the first `fit` epoch counts as. Defaults to `0`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, `use_multiprocessing`, ...).

    Examples:
        >>> import numpy as np
        >>> data = ShiftedMNIST(np.zeros((10, 28, 28, 1), "float32"), np.arange(10), batch_size=4)
        >>> len(data), data[2][0].shape, sorted(np.concatenate([data[i][1] for i in range(3)]).tolist())
        (3, (2, 28, 28, 1), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """

    def __init__(self, images, labels, batch_size, max_shift=2, seed=0, initial_epoch=0, **kwargs):
        super().__init__(**kwargs)
        self.images, self.labels, self.batch_size = images, labels, int(batch_size)
        self.max_shift, self.seed, self.epoch = int(max_shift), seed, initial_epoch
        self._start_epoch()

    def _start_epoch(self):
        self._rng = np.random.default_rng([self.seed, self.epoch])
        self._order = self._rng.permutation(len(self.images))

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return random_shift(self.images[idx], self.max_shift, rng), self.labels[idx]

    def on_epoch_end(self):
        self.epoch += 1
        self._start_epoch()


class ClassifierTask(zoo_task.Task):
    """Training recipe of the MNIST classifier: Adam with warm-up and cosine decay over a few epochs.

    Recipe: batch 128, Adam with linear warm-up over 200 steps to 2e-3 and cosine decay to zero over 5
    epochs of the 60,000 training images, each shifted by up to 2 pixels (`ShiftedMNIST`). Evaluation:
    test accuracy and mean cross-entropy on the 10,000 test images. Registered as `"mnist_classifier"`.

    Examples:
        >>> task = ClassifierTask()
        >>> task.name, task.epochs, task.default_estimator
        ('mnist_classifier', 5, 'dab')
    """

    name = "mnist_classifier"
    constructor = staticmethod(MNISTClassifier)
    description = "MNIST CNN with a 128-bit Sign code before its last layer: (B, 28, 28, 1) -> (B, 10) logits"
    batch_size = 128
    learning_rate = 2e-3
    warmup_steps = 200
    epochs = 5
    #: Training augmentation: random shifts of up to this many pixels (0: the plain images).
    max_shift = 2

    def build(self, estimator, weights=None, **config):
        return MNISTClassifier(estimator=estimator, weights=weights, **config)

    def train_data(self, batch_size, seed, data="tfds", initial_epoch=0):
        mnist = zoo_data.load_mnist(data)
        x, y = mnist["x_train"], mnist["y_train"]
        description = (
            f"MNIST from {zoo_data.describe_source(data)}: the training split ({len(x)} images), "
            f"shuffled each epoch, seed {seed}"
        )
        if not self.max_shift:
            return zoo_task.TrainData(x=x, y=y, epoch_size=len(x), description=description)
        data = ShiftedMNIST(x, y, batch_size, self.max_shift, seed=seed, initial_epoch=initial_epoch)
        return zoo_task.TrainData(
            x=data,
            steps_per_epoch=len(data),
            epoch_size=len(x),
            description=f"{description}, random shifts of up to {self.max_shift} pixels",
        )

    def loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def evaluate(self, model, data="tfds", batch_size=None, verbose=0):
        mnist = zoo_data.load_mnist(data)
        x, y = mnist["x_test"], mnist["y_test"]
        logits = np.asarray(model.predict(x, batch_size=batch_size or 1000, verbose=verbose), "float64")
        return {
            "accuracy": float((logits.argmax(-1) == y).mean()),
            "loss": float(zoo_metrics.sparse_nll(logits, y).mean()),
            "test_images": int(len(y)),
        }
