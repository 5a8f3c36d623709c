"""Per-layer estimator state: what `Estimator.build` creates for the layer that uses the estimator.

Three Keras objects, each with one job:

- `EstimatorState`: a Keras layer, the container an estimator builds for one op layer (its temperature
  variable, its approximator network, its running sums). The op layer tracks it as a sublayer, so its
  weights train, count and save with the layer; the op layer saves them under keys tagged with the
  estimator (`dab_keras.layers.DiscreteLayer`), which makes weight files portable across estimators.
- `RunningSums`: a Keras layer holding accumulators that a forward pass updates. Its variables are layer
  *variables* (so the JAX trainer carries their updates through `stateless_call`, like a `SeedGenerator`'s
  state) but not *weights*: they stay out of `weights`, `get_weights()`, weight files and parameter
  counts, as Keras's own metric state does.
- `SumsMetric`: a `keras.metrics.Metric` reporting values computed from running sums under fixed names
  (a dict result), reset by Keras at the start of each epoch and of `evaluate`.
"""

import keras
from keras import ops


class RunningSums(keras.layers.Layer):
    """Float32 accumulators updated in a forward pass: layer state that is not a weight.

    Each sum is a non-trainable variable of the layer, so the training step updates it on every backend
    (on JAX, through `stateless_call`'s non-trainable state), but the layer reports no `weights` and saves
    nothing: its values are metrics, not parameters.

    Args:
        sums: Dict `name -> shape` of the sums to create (zero-initialized float32 variables).
        **kwargs: Base layer arguments (`name`).

    Examples:
        >>> sums = RunningSums({"total": (), "count": ()})
        >>> sums.add({"total": 2.5, "count": 1.0})
        >>> float(sums.read("total")), sums.weights, len(sums.variables)
        (2.5, [], 2)
        >>> sums.reset()
        >>> float(sums.read("total"))
        0.0
    """

    def __init__(self, sums, **kwargs):
        super().__init__(**kwargs)
        self._sums = {}
        for name, shape in sums.items():
            self._sums[name] = self.add_variable(
                shape=tuple(shape), initializer="zeros", dtype="float32", trainable=False, name=name
            )
        self.built = True

    @property
    def weights(self):
        """No weights: the sums are variables (`variables`, `non_trainable_variables`) only.

        Returns:
            An empty list.
        """
        return []

    def save_own_variables(self, store):
        pass  # running sums are metric state, not saved

    def load_own_variables(self, store):
        pass

    def add(self, values):
        """Adds `values` (a dict `name -> tensor`) to the sums, without gradient.

        Args:
            values: Dict from sum names to tensors broadcastable to the sums' shapes.
        """
        for name, value in values.items():
            self._sums[name].assign_add(ops.cast(ops.stop_gradient(value), "float32"))

    def read(self, name):
        """The current value of the sum `name`.

        Args:
            name: A sum name given at construction.

        Returns:
            A float32 tensor.

        Raises:
            TypeError: while the JAX trainer holds the layer state outside the variables (during an
                epoch); `SumsMetric` reports zeros then.
        """
        return self._sums[name].value

    def reset(self):
        """Sets every sum to zero."""
        for variable in self._sums.values():
            variable.assign(ops.zeros(variable.shape, "float32"))


class SumsMetric(keras.metrics.Metric):
    """A metric whose values a layer computes from its `RunningSums` (Keras never calls `update_state`).

    `result()` returns a dict `{key: value}` (Keras logs each key), computed by `compute(sums)`.
    `reset_state()` zeroes the sums. On the JAX backend the trainer keeps layer state outside the
    variables during an epoch: the progress bar then shows zeros, and the epoch logs (`History`,
    `CSVLogger`, validation) hold the true values, read after the epoch's state sync.

    Args:
        sums: The `RunningSums` layer read (held untracked: the metric owns no variables).
        keys: The names of the values, in order.
        compute: Function `sums -> tuple of scalar tensors`, one per key.
        name: The metric's name.

    Examples:
        >>> sums = RunningSums({"total": (), "count": ()})
        >>> metric = SumsMetric(sums, ["mean"], lambda s: (s.read("total") / s.read("count"),), "mean")
        >>> sums.add({"total": 3.0, "count": 2.0})
        >>> {k: float(v) for k, v in metric.result().items()}
        {'mean': 1.5}
    """

    def __init__(self, sums, keys, compute, name):
        super().__init__(name=name)
        self._source = _Holder((sums, compute))
        self.keys = tuple(keys)

    def update_state(self, *args, **kwargs):
        pass

    def result(self):
        try:
            sums, compute = self._source.value
            values = compute(sums)
        except TypeError:
            values = [ops.zeros((), "float32") for _ in self.keys]
        return dict(zip(self.keys, values))

    def reset_state(self):
        self._source.value[0].reset()


class _Holder:
    """A plain holder, so that Keras's attribute tracking does not adopt the object it holds."""

    def __init__(self, value):
        self.value = value


class EstimatorState(keras.layers.Layer):
    """The state an estimator creates for one op layer, tracked under it as `layer.estimator_state`.

    The base class holds an optional annealable temperature; estimators with more state subclass it or
    add weights and sublayers to it in `Estimator.build`. All of it is training-only: at inference the
    op layer returns the hard output without it (`dab_keras.export_inference` drops it).

    Protocol (read by the op layer, `dab_keras.callbacks.TemperatureSchedule` and `dab_keras.summary`):

    - `temperature`: the non-trainable float32 τ variable that `TemperatureSchedule` anneals, or `None`.
    - `approximator`: a Keras layer (DAB's network g), or `None`.
    - `reported_metrics()`: the `keras.metrics.Metric`s the op layer exposes in its `metrics` (and so
      in `fit`/`evaluate` logs).
    - `describe()`: a dict of what `dab_keras.summary` prints.

    Args:
        temperature: Initial τ of a non-trainable float32 `temperature` variable, or `None` for none.
            Defaults to `None`.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Examples:
        >>> state = EstimatorState(temperature=0.5)
        >>> float(state.temperature), [w.name for w in state.weights]
        (0.5, ['temperature'])
    """

    approximator = None

    def __init__(self, temperature=None, **kwargs):
        super().__init__(**kwargs)
        self.temperature = None
        if temperature is not None:
            self.temperature = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(temperature),
                trainable=False,
                dtype="float32",
                name="temperature",
            )
        self._reported = _Holder([])
        self.built = True

    def report(self, metric):
        """Adds `metric` to `reported_metrics()` (untracked here: the op layer reports it once).

        Args:
            metric: A `keras.metrics.Metric`.

        Returns:
            `metric`.
        """
        self._reported.value.append(metric)
        return metric

    def reported_metrics(self):
        """The metrics this state reports through the op layer.

        Returns:
            A list of `keras.metrics.Metric`.
        """
        return list(self._reported.value)

    def describe(self):
        """What `dab_keras.summary` prints for this state.

        Returns:
            A dict: `temperature` (float or `None`), `approximator` (name or `None`),
            `approximator_params` (int).
        """
        temperature = None
        if self.temperature is not None:
            temperature = float(ops.convert_to_numpy(self.temperature))
        approximator = self.approximator
        return {
            "temperature": temperature,
            "approximator": None if approximator is None else type(approximator).__name__,
            "approximator_params": 0 if approximator is None else approximator.count_params(),
        }

    def call(self, inputs):
        return inputs
