"""Registry of zoo models: name → `Task` (constructor, recipe, data, evaluation)."""

from dab_keras.zoo import weights as zoo_weights

_TASKS = {}


def register(task):
    """Adds a `Task` instance to the registry under `task.name` and returns it.

    `dab_keras.zoo` registers its own tasks on import; register yours before calling `train` or
    `evaluate` (or `dab-zoo`, from a script that imports your module) with its name.

    Args:
        task: A `dab_keras.zoo.task.Task` instance with a unique `name`.

    Returns:
        `task`.

    Raises:
        ValueError: if a task of that name is registered already.

    Examples:
        ```python
        from dab_keras.zoo import registry, task

        class MyTask(task.Task):
            name = "my_model"
            constructor = staticmethod(MyModel)  # the family's constructor
            ...  # build, train_data, evaluate

        registry.register(MyTask())
        ```
    """
    if task.name in _TASKS:
        raise ValueError(f"A zoo model named {task.name!r} is registered already.")
    _TASKS[task.name] = task
    return task


def unregister(name):
    """Removes the task registered as `name` (e.g. one a script registered for a single run).

    Args:
        name: A registry name (see `list_models`).

    Returns:
        The removed `dab_keras.zoo.task.Task` instance.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).

    Examples:
        >>> from dab_keras.zoo import vae
        >>> task = vae.VAETask("categorical")
        >>> task.name = "my_vae"
        >>> _ = register(task)
        >>> unregister("my_vae") is task, "my_vae" in list_models()
        (True, False)
    """
    task = get(name)
    del _TASKS[name]
    return task


def get(name):
    """Returns the `Task` registered as `name`.

    Args:
        name: A registry name (see `list_models`).

    Returns:
        The registered `dab_keras.zoo.task.Task` instance.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).

    Examples:
        >>> task = get("sorter")
        >>> task.name, task.batch_size
        ('sorter', 1024)
    """
    if name not in _TASKS:
        raise ValueError(f"Unknown zoo model {name!r}. Available: {', '.join(sorted(_TASKS))}.")
    return _TASKS[name]


def list_models():
    """Names of the zoo's models, sorted.

    Returns:
        A sorted list of registry names.

    Examples:
        >>> from dab_keras import zoo
        >>> zoo.list_models()
        ['binary_vae', 'discrete_vae', 'mnist_classifier', 'sorter']
    """
    return sorted(_TASKS)


def describe():
    """One row per model: name, description, default estimator, estimators with shipped weights.

    Returns:
        A list of dicts with keys `name`, `description`, `default_estimator` and `pretrained` (the
        estimators with shipped weights), sorted by name (what `dab-zoo list` prints).

    Examples:
        >>> [(row["name"], row["pretrained"]) for row in describe()]  # doctest: +NORMALIZE_WHITESPACE
        [('binary_vae', ['dab']), ('discrete_vae', ['dab', 'dab_residual', 'dab_residual_reinmax', 'relaxed']),
         ('mnist_classifier', ['dab', 'dab_residual', 'relaxed', 'straight_through']),
         ('sorter', ['dab', 'dab_residual', 'straight_through'])]
    """
    rows = []
    for name in list_models():
        task = _TASKS[name]
        shipped = zoo_weights.shipped_keys(name)
        rows.append(
            {
                "name": name,
                "description": task.description,
                "default_estimator": task.default_estimator,
                "pretrained": shipped,
            }
        )
    return rows
