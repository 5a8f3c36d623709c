"""The tutorial notebooks (a package only so that pytest tells `tutorials/conftest.py` from `tests/conftest.py`)."""
