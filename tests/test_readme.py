"""The README's example and the quick-start script run and do what they say."""

import pathlib
import re
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_example_trains_and_outputs_ternary_codes(capsys):
    source = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[0]
    namespace = {}
    exec(compile(source, "README.md", "exec"), namespace)
    codes = np.asarray(namespace["codes"])
    assert codes.shape == (3, 32)
    assert set(np.unique(codes)) <= {-1.0, 0.0, 1.0}
    history = namespace["history"].history
    assert np.isfinite(history["loss"]).all()
    assert history["accuracy"][-1] > 0.8  # the toy target is linearly separable through the code


def test_readme_example_runs_twice_in_one_process():
    """Its metric key does not depend on layer auto-numbering (the second run's layer is `sign_1`)."""
    source = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[0]
    for _ in range(2):
        namespace = {}
        exec(compile(source, "README.md", "exec"), namespace)
        history = namespace["history"].history
        assert history["approximation_error"][-1] > 0 and np.isfinite(history["dab_loss"][-1])


def test_quickstart_script_prints_a_row_per_estimator():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--epochs", "4", "--samples", "8192",
         "--verbose", "0"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "estimator" not in line]
    assert [row.split("|")[1].strip().split(" ")[0] for row in rows] == [
        "straight_through", "straight_through", "relaxed", "dab"]
    # 128 steps learn the teacher's 10 classes well above chance (its most frequent class is 18 % of
    # the test set) with every estimator (DAB's approximator needs some of them to learn the sign).
    for row in rows:
        accuracy = float(row.split("|")[2])
        assert accuracy > 0.4, row
