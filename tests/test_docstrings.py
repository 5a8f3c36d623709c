"""Every public symbol of `dab_keras` and `dab_keras.zoo` has a complete Google-style docstring.

Complete means:

- a docstring;
- an `Args:` section when the callable takes parameters (other than `self`/`cls`; a class's are its
  constructor's), naming each parameter exactly once and nothing else (`*args` / `**kwargs` as such);
- a `Returns:` section for functions and methods that return a value (not for classes, properties, or
  procedures that only `return` bare or fall off the end);
- for functions and classes (methods are exempt), an `Examples:` section with doctest lines (`>>>`),
  which `--doctest-modules` (`dab_keras`) and `tests/zoo/test_zoo_doctests.py` (the zoo) execute; the
  few symbols in `FENCED_EXAMPLES` show a fenced ```python block instead.

Section bodies are indented under their title, the layout mkdocstrings' Google parser (griffe) needs.
Only `Examples:` is accepted as the example title: griffe reads `Example:` as an admonition, in which
`>>>` lines render as nested block quotes instead of code.

The public API: each `dab_keras` package's `__all__`, the public names defined in `dab_keras.callbacks`,
`dab_keras.zoo.__all__` and the public names defined in the zoo's modules (see `ZOO_MODULES`), plus the
public methods of those classes. Methods that override a Keras base class (`call`, `build`, `get_config`,
callbacks' `on_*`, ...) keep Keras's documentation and are skipped; an override of a documented
`dab_keras` method is skipped when it has no docstring of its own and the same parameters.
"""

import ast
import importlib
import importlib.util
import inspect
import pathlib
import pkgutil
import re
import textwrap

import keras
import pytest

from dab_keras import zoo

PACKAGES = ["dab_keras.ops", "dab_keras.estimators", "dab_keras.layers"]
#: Modules without `__all__`: their public names are the ones they define.
MODULES = ["dab_keras.callbacks", "dab_keras.losses", "dab_keras.metrics"]
ZOO_MODULES = [
    "dab_keras.zoo.data",
    "dab_keras.zoo.weights",
    "dab_keras.zoo.registry",
    "dab_keras.zoo.task",
    "dab_keras.zoo.training",
    "dab_keras.zoo.sorter",
    "dab_keras.zoo.classifier",
    "dab_keras.zoo.vae",
    "dab_keras.zoo.vae_model",
    "dab_keras.zoo.vae_math",
    "dab_keras.zoo.vae_evaluation",
    "dab_keras.zoo.binarized_mnist",
    "dab_keras.zoo.codes",
    "dab_keras.zoo.metrics",
    "dab_keras.zoo.cli",
    "dab_keras.zoo.distribute",
    "dab_keras.zoo.device_data",
]
#: Zoo modules without public API of their own: the demo behind `dab-zoo demo` (`main` only).
ZOO_INTERNAL = ["dab_keras.zoo.demo"]

#: Symbols whose example is a fenced ```python block rather than executed `>>>` lines, with the reason.
FENCED_EXAMPLES = {
    "dab_keras.zoo.training.train": "trains a model for minutes and writes a run folder",
    "dab_keras.zoo.training.evaluate": "runs the full test set (100,000 sequences or MNIST from tfds)",
    "dab_keras.zoo.binarized_mnist.binarized_test_sets": "reads the full MNIST test split (TensorFlow Datasets)",
    "dab_keras.zoo.registry.register": "changes the process-wide registry of models",
    "dab_keras.zoo.device_data.sorting_batch": "JAX only, and the suite's main backend is TensorFlow",
    "dab_keras.zoo.device_data.DeviceSortingTrainer": "JAX only, and the suite's main backend is TensorFlow",
}

#: Methods without a body (protocol members, hooks) that return nothing, so need no `Returns:`.
ABSTRACT_PROCEDURES = {
    "dab_keras.estimators.Bridgeable.add_loss",
    "dab_keras.layers.DiscreteLayer.build_op",
}

#: Keras base classes: a method overriding one of theirs keeps Keras's documentation.
KERAS_BASES = (
    keras.layers.Layer,
    keras.Model,
    keras.metrics.Metric,
    keras.callbacks.Callback,
    keras.utils.PyDataset,
)

#: Floor on the number of symbols checked, per kind, so the test cannot pass vacuously.
MINIMUM = {"function": 60, "class": 24, "method": 40}


# ---------------------------------------------------------------------------------------------- discovery
def _defined_here(module):
    """Public functions and classes defined in `module` itself (not imported into it)."""
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) == module.__name__:
            yield name, obj


def _keras_hook(cls, name):
    return any(issubclass(cls, base) and hasattr(base, name) for base in KERAS_BASES)


def _documented_base_method(cls, name, func):
    """True when `func` overrides a base method and can use its docstring (same parameters)."""
    if func.__doc__ is not None:
        return False
    for base in cls.__mro__[1:]:
        if name in vars(base):
            base_func = _unwrap(vars(base)[name])
            return base_func.__doc__ is not None and _params(base_func, True) == _params(func, True)
    return False


def _unwrap(attr):
    return attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr


def _methods(qualname, cls):
    for name, attr in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(attr, property):
            yield f"{qualname}.{name}", attr, "property"
            continue
        func = _unwrap(attr)
        if not inspect.isfunction(func) or func.__qualname__ != f"{cls.__qualname__}.{name}":
            continue  # not a method, or a function defined elsewhere (`constructor = staticmethod(Sorter)`)
        if _keras_hook(cls, name) or _documented_base_method(cls, name, func):
            continue
        yield f"{qualname}.{name}", attr, "method"


def public_api():
    """`[(qualified name, object, kind)]` of the public API, each object once."""
    found = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                found.append((f"{package}.{name}", obj))
    for module_name in MODULES + ZOO_MODULES:
        module = importlib.import_module(module_name)
        found.extend((f"{module_name}.{name}", obj) for name, obj in _defined_here(module))
    for name in zoo.__all__:
        obj = getattr(zoo, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            found.append((f"dab_keras.zoo.{name}", obj))

    symbols, seen = [], set()
    for qualname, obj in found:
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        # Name an object by its defining module when it is defined in a zoo module (`zoo.train` is
        # `dab_keras.zoo.training.train`), so messages and `FENCED_EXAMPLES` use one name.
        if obj.__module__.startswith("dab_keras.zoo.") and not qualname.startswith(obj.__module__ + "."):
            qualname = f"{obj.__module__}.{obj.__qualname__}"
        if inspect.isclass(obj):
            symbols.append((qualname, obj, "class"))
            symbols.extend(_methods(qualname, obj))
        else:
            symbols.append((qualname, obj, "function"))
    return symbols


# ------------------------------------------------------------------------------------------------ parsing
_TITLE = re.compile(r"([A-Z][A-Za-z ]*):")


def sections(doc):
    """`{title: [body lines]}` of a Google-style docstring; a body is the indented lines under its title."""
    out, current = {}, None
    for line in inspect.cleandoc(doc).splitlines():
        if _TITLE.fullmatch(line):
            current = _TITLE.fullmatch(line).group(1)
            out[current] = []
        elif current is not None:
            if line and not line[0].isspace():
                current = None
            else:
                out[current].append(line)
    return out


_ARG = re.compile(r"(\*{0,2}[A-Za-z_]\w*)(?: \([^)]*\))?:(?: |$)")


def arg_names(body):
    """Names of the entries of an `Args:` body (`None` for an entry not in `name: text` form)."""
    lines = [line for line in body if line.strip()]
    if not lines:
        return []
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    names = []
    for line in lines:
        if len(line) - len(line.lstrip()) == indent:
            match = _ARG.match(line.strip())
            names.append(match.group(1) if match else None)
    return names


def _params(func, is_method):
    params = list(inspect.signature(func).parameters.values())
    if is_method and params and params[0].name in ("self", "cls"):
        params = params[1:]
    names = []
    for p in params:
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(prefix + p.name)
    return names


def constructor_params(cls):
    """Constructor parameters of `cls` (none for protocols and classes without an `__init__` of their own)."""
    if getattr(cls, "_is_protocol", False):
        return []
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            if klass is object:
                return []
            return _params(vars(klass)["__init__"], True)
    return []


def _function_node(func):
    source = textwrap.dedent(inspect.getsource(func))
    return next(n for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _own_nodes(node):
    """The nodes of a function body, not descending into nested functions, lambdas or classes."""
    stack = list(node.body)
    while stack:
        n = stack.pop()
        yield n
        for child in ast.iter_child_nodes(n):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                stack.append(child)


def _is_abstract(node):
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    for stmt in body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):  # `...` or a string
            continue
        if isinstance(stmt, ast.Raise):
            exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                continue
        return False
    return True


def returns_value(func, qualname):
    """Whether `func` returns a value: an explicit `return <expr>` (`return None` included) or `yield`,
    or an abstract body (a contract its overrides fulfil) unless listed in `ABSTRACT_PROCEDURES`."""
    node = _function_node(func)
    if _is_abstract(node):
        return qualname not in ABSTRACT_PROCEDURES
    return any(
        (isinstance(n, ast.Return) and n.value is not None) or isinstance(n, (ast.Yield, ast.YieldFrom))
        for n in _own_nodes(node)
    )


# ------------------------------------------------------------------------------------------------- checks
def problems(qualname, obj, kind):
    """The list of what is missing or wrong in `obj`'s docstring, each naming `qualname`."""
    doc = obj.__doc__ if kind != "method" else _unwrap(obj).__doc__
    if not doc or not doc.strip():
        return [f"{qualname}: no docstring"]
    if kind == "property":
        return []
    found = sections(doc)
    out = []

    func = _unwrap(obj)
    expected = constructor_params(obj) if kind == "class" else _params(func, kind == "method")
    if expected and "Args" not in found:
        out.append(f"{qualname}: no `Args:` section (parameters: {', '.join(expected)})")
    if "Args" in found:
        names = arg_names(found["Args"])
        if not names:
            out.append(f"{qualname}: `Args:` section is empty or not indented under its title")
        if None in names:
            out.append(f"{qualname}: an `Args:` entry is not in `name: description` form")
        names = [n for n in names if n is not None]
        missing = [p for p in expected if p not in names]
        stale = [n for n in names if n not in expected]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if missing:
            out.append(f"{qualname}: `Args:` lacks {', '.join(missing)}")
        if stale:
            out.append(f"{qualname}: `Args:` documents {', '.join(stale)}, not parameters of the signature")
        if duplicated:
            out.append(f"{qualname}: `Args:` documents {', '.join(duplicated)} more than once")

    if kind != "class" and returns_value(func, qualname):
        if "Returns" not in found and "Yields" not in found:
            out.append(f"{qualname}: no `Returns:` section (it returns a value)")
        elif not any(line.strip() for line in found.get("Returns", found.get("Yields", []))):
            out.append(f"{qualname}: `Returns:` section is empty or not indented under its title")

    if kind in ("function", "class"):
        title = "Examples" if "Examples" in found else "Example" if "Example" in found else None
        body = "\n".join(found.get(title, []))
        if title is None:
            out.append(f"{qualname}: no `Examples:` section")
        elif title == "Example":
            out.append(f"{qualname}: titled `Example:`; use `Examples:` (griffe reads it as an admonition)")
        if title is not None and not body.strip():
            out.append(f"{qualname}: `Examples:` section is empty or not indented under its title")
        elif title is not None and qualname in FENCED_EXAMPLES:
            if "```python" not in body:
                out.append(f"{qualname}: listed in FENCED_EXAMPLES but its example has no ```python block")
        elif title is not None and ">>>" not in body:
            out.append(f"{qualname}: `Examples:` has no doctest (`>>>`) lines and is not in FENCED_EXAMPLES")
    return out


SYMBOLS = public_api()


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Replaces conftest's fixture: these tests run no backend ops, so they need no seeding or cleanup
    (seeding would initialize the backend's devices, which alone can take seconds on JAX)."""
    yield


def test_public_api_docstrings_are_complete():
    failures = [p for qualname, obj, kind in SYMBOLS for p in problems(qualname, obj, kind)]
    assert not failures, f"{len(failures)} docstring problem(s):\n" + "\n".join(failures)


def test_checks_enough_symbols():
    counts = {kind: sum(1 for _, _, k in SYMBOLS if k == kind) for kind in MINIMUM}
    assert all(counts[kind] >= n for kind, n in MINIMUM.items()), counts
    names = {qualname for qualname, _, _ in SYMBOLS}
    for expected in (
        "dab_keras.ops.gumbel_softmax",
        "dab_keras.estimators.Estimator.__call__",
        "dab_keras.estimators.Bridgeable.relax",
        "dab_keras.layers.DiscreteLayer.hard",
        "dab_keras.callbacks.TemperatureSchedule",
        "dab_keras.zoo.vae_model.DiscreteVAEModel.neg_iwae",
        "dab_keras.zoo.training.train",
        "dab_keras.zoo.task.Task.train_data",
    ):
        assert expected in names


def test_fenced_examples_list_is_explicit_and_current():
    names = {qualname: obj for qualname, obj, _ in SYMBOLS}
    for qualname, reason in FENCED_EXAMPLES.items():
        assert reason, qualname
        assert qualname in names, f"{qualname} is in FENCED_EXAMPLES but not a public symbol"
        body = "\n".join(sections(names[qualname].__doc__ or "").get("Examples", []))
        assert ">>>" not in body, f"{qualname} has a doctest now; remove it from FENCED_EXAMPLES"
    for qualname in ABSTRACT_PROCEDURES:
        assert qualname in names, f"{qualname} is in ABSTRACT_PROCEDURES but not a public symbol"


def test_package_and_module_docstrings():
    # Every zoo module is checked (a new module must join ZOO_MODULES, or ZOO_INTERNAL).
    found = {f"dab_keras.zoo.{info.name}" for info in pkgutil.iter_modules(zoo.__path__)}
    assert found == set(ZOO_MODULES) | set(ZOO_INTERNAL), found ^ (set(ZOO_MODULES) | set(ZOO_INTERNAL))
    for name in ["dab_keras", *PACKAGES, *MODULES, "dab_keras.zoo", *ZOO_MODULES, *ZOO_INTERNAL]:
        module = importlib.import_module(name)
        assert (module.__doc__ or "").strip(), f"{name}: no module docstring"


def test_zoo_examples_are_executed():
    # pytest cannot collect the top-level zoo/ folder with --doctest-modules; tests/zoo/test_zoo_doctests.py
    # runs the examples of the modules it lists, which must cover every zoo module with an example.
    path = pathlib.Path(__file__).parent / "zoo" / "test_zoo_doctests.py"
    spec = importlib.util.spec_from_file_location("_zoo_doctests", path)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    for qualname, obj, kind in SYMBOLS:
        if kind in ("function", "class") and obj.__module__.startswith("dab_keras.zoo"):
            if ">>>" in (obj.__doc__ or ""):
                assert obj.__module__ in runner.MODULES, f"{qualname}: its module's examples are not run"


def test_checker_reports_each_problem():
    # Built here, not at module level, so that --doctest-modules does not collect their examples.
    def _bad(x, y, *args, flag=False, **kwargs):
        return x

    _bad.__doc__ = """Summary.

    Args:
        x: Documented.
        z: Not a parameter.
        **kwargs: Documented.

    Example:
    %s _bad(1, 2)
    """ % (">" * 3)

    class _BadLayer(keras.layers.Layer):
        """A layer whose constructor arguments are not documented.

        Examples:
            ```python
            layer = _BadLayer(3)
            ```
        """

        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)

        def call(self, inputs):  # a Keras hook: not checked
            return inputs

        def encode(self, x):
            return x

    found = problems("bad", _bad, "function")
    assert "bad: `Args:` lacks y, *args, flag" in found
    assert "bad: `Args:` documents z, not parameters of the signature" in found
    assert "bad: no `Returns:` section (it returns a value)" in found
    assert any("titled `Example:`" in p for p in found)
    assert "bad: `Examples:` section is empty or not indented under its title" in found

    found = problems("bad_layer", _BadLayer, "class")
    assert found == [
        "bad_layer: no `Args:` section (parameters: units, **kwargs)",
        "bad_layer: `Examples:` has no doctest (`>>>`) lines and is not in FENCED_EXAMPLES",
    ]
    methods = {q: (o, k) for q, o, k in _methods("bad_layer", _BadLayer)}
    assert set(methods) == {"bad_layer.encode"}
    assert problems("bad_layer.encode", *methods["bad_layer.encode"]) == ["bad_layer.encode: no docstring"]

