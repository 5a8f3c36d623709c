"""The docstring examples of `dab_keras.zoo` run and print what they show.

pytest's `--doctest-modules` cannot collect the top-level `zoo/` folder (it would import it a second time
as a package named `zoo`), so the examples run here through the installed `dab_keras.zoo` modules.
"""

import doctest
import importlib

import pytest

MODULES = ["dab_keras.zoo.classifier", "dab_keras.zoo.registry", "dab_keras.zoo.sorter", "dab_keras.zoo.vae"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
