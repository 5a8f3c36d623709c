"""The docstring examples of `dab_keras.zoo` run and print what they show.

pytest's `--doctest-modules` cannot collect the top-level `zoo/` folder (it would import it a second time
as a package named `zoo`), so the examples run here through the installed `dab_keras.zoo` modules. Every
module of the package is run; the ones without examples (command-line entry points) are listed.
"""

import doctest
import importlib
import pkgutil

import pytest

import dab_keras.zoo

#: Modules without docstring examples: the demo behind `dab-zoo demo` (it trains for a minute).
NO_EXAMPLES = {"dab_keras.zoo.demo"}

MODULES = sorted(
    ["dab_keras.zoo"]
    + [f"dab_keras.zoo.{info.name}" for info in pkgutil.iter_modules(dab_keras.zoo.__path__)]
)


def test_module_list_is_complete():
    expected = ["binarized_mnist", "classifier", "cli", "codes", "data", "metrics", "registry", "sorter", "task",
                "training", "vae", "vae_evaluation", "vae_math", "vae_model", "weights"]
    assert {f"dab_keras.zoo.{name}" for name in expected} | NO_EXAMPLES <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    if name in NO_EXAMPLES:
        assert result.attempted == 0, f"{name} has examples now; remove it from NO_EXAMPLES"
    else:
        assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
