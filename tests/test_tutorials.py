"""The tutorial notebooks are complete, openable in Colab and committed freshly executed.

Running them is `pytest --nbmake tutorials` (part of the default test run, in their fast setting); these
checks read the committed files only.
"""

import json
import pathlib
import re

import pytest

TUTORIALS = pathlib.Path(__file__).resolve().parents[1] / "tutorials"
NAMES = [
    "01_quick_start",
    "02_estimators_compared",
    "03_learning_to_sort",
    "04_discrete_vae",
    "05_fine_tuning",
    "06_bring_your_own_function",
]
COLAB = "https://colab.research.google.com/github/dab-keras/dab_keras/blob/main/tutorials/{}.ipynb"
MAX_BYTES = 2_000_000


def _load(name):
    with open(TUTORIALS / f"{name}.ipynb", encoding="utf-8") as f:
        return json.load(f)


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_folder_holds_exactly_the_listed_tutorials():
    assert sorted(p.stem for p in TUTORIALS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_opens_with_a_title_and_its_own_colab_badge(name):
    nb = _load(name)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown"
    text = _source(first)
    assert text.startswith("# "), "the first cell starts with the notebook's title"
    assert COLAB.format(name) in text, f"the Colab badge must open tutorials/{name}.ipynb"
    assert "colab-badge.svg" in text


@pytest.mark.parametrize("name", NAMES)
def test_first_code_cell_installs_the_package_only_where_missing(name):
    install = _source(_code_cells(_load(name))[0])
    assert 'find_spec("dab_keras") is None' in install
    assert re.search(r"%pip install -q \"dab_keras @ git\+https://github.com/dab-keras/dab_keras\"", install)


@pytest.mark.parametrize("name", NAMES)
def test_has_a_fast_setting(name):
    code = "\n".join(_source(c) for c in _code_cells(_load(name)))
    assert 'os.environ.get("DAB_KERAS_FAST") == "1"' in code
    assert "FAST" in code.split('os.environ.get("DAB_KERAS_FAST")', 1)[1], "FAST must be used after it is read"


@pytest.mark.parametrize("name", NAMES)
def test_is_committed_freshly_executed_top_to_bottom(name):
    nb = _load(name)
    cells = _code_cells(nb)
    counts = [c.get("execution_count") for c in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{name}: execution counts {counts}; re-run it top to bottom "
        "(jupyter nbconvert --to notebook --execute --inplace)"
    )
    for i, cell in enumerate(cells, 1):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{name}: cell {i} raised {out.get('ename')}"
            if out["output_type"] == "stream":
                assert "Traceback" not in "".join(out["text"]), f"{name}: cell {i} printed a traceback"
    # A notebook whose cells all ran shows its results: at least one figure and some printed numbers.
    kinds = {
        key for c in cells for out in c.get("outputs", []) for key in out.get("data", {}) if key.startswith("image/")
    }
    assert "image/png" in kinds, f"{name}: no plot"


@pytest.mark.parametrize("name", NAMES)
def test_metadata_and_size(name):
    nb = _load(name)
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    size = (TUTORIALS / f"{name}.ipynb").stat().st_size
    assert size < MAX_BYTES, f"{name} is {size} bytes; keep plots small (< {MAX_BYTES} bytes in all)"


@pytest.mark.parametrize("name", NAMES)
def test_section_headings_are_plain_text(name):
    # The docs site's table of contents (mkdocs-jupyter) drops inline code from headings and then links
    # to an anchor that does not exist, so headings carry no backticks.
    headings = [
        line
        for cell in _load(name)["cells"]
        if cell["cell_type"] == "markdown"
        for line in _source(cell).splitlines()
        if line.startswith("#")
    ]
    assert headings, name
    assert not [h for h in headings if "`" in h]
