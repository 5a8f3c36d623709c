"""Registry of zoo models: name → `Task` (constructor, recipe, data, evaluation)."""

from dab_keras.zoo import weights as zoo_weights

_TASKS = {}


def register(task):
    """Adds a `Task` instance to the registry under `task.name` and returns it."""
    if task.name in _TASKS:
        raise ValueError(f"A zoo model named {task.name!r} is registered already.")
    _TASKS[task.name] = task
    return task


def get(name):
    """Returns the `Task` registered as `name`.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in _TASKS:
        raise ValueError(f"Unknown zoo model {name!r}. Available: {', '.join(sorted(_TASKS))}.")
    return _TASKS[name]


def list_models():
    """Names of the zoo's models, sorted.

    Example:
    >>> from dab_keras import zoo
    >>> "sorter" in zoo.list_models()
    True
    """
    return sorted(_TASKS)


def describe():
    """One row per model: name, description, default estimator, estimators with shipped weights."""
    rows = []
    for name in list_models():
        task = _TASKS[name]
        shipped = [m["estimator"] for m in zoo_weights.shipped_manifests(name)]
        rows.append(
            {
                "name": name,
                "description": task.description,
                "default_estimator": task.default_estimator,
                "pretrained": shipped,
            }
        )
    return rows
