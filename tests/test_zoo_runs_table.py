"""`benchmarks/zoo_runs.py`: finished zoo runs tabulated by seed, with intervals and paired differences."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import zoo_runs  # noqa: E402
from benchmarks.study import stats  # noqa: E402


def _run(folder, seed, accuracy, name="sorter-dab.json"):
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    (folder / name).write_text(json.dumps({"seed": seed, "metrics": {"accuracy": accuracy}}))
    return str(folder)


def test_table_pairs_runs_by_seed_and_lists_unfinished_ones(tmp_path):
    st = [_run(tmp_path / f"st{s}", s, a) for s, a in [(0, 0.50), (1, 0.60), (2, 0.70)]]
    # given out of order: pairing follows the manifests' seeds, not the order of the folders
    dab = [_run(tmp_path / "dab2", 2, 0.75), _run(tmp_path / "dab0", 0, 0.52)]
    (tmp_path / "dab1").mkdir()  # started, no manifest yet
    dab.append(str(tmp_path / "dab1"))
    text = zoo_runs.table({"st": st, "dab": dab}, "accuracy", reference="st", scale=100.0)
    mean, half, _ = stats.mean_interval([50.0, 60.0, 70.0])
    assert f"| st | 50.00 (s0) / 60.00 (s1) / 70.00 (s2) | {mean:.2f} ± {half:.2f} | – |" in text
    diff, diff_half, _ = stats.mean_interval([2.0, 5.0])
    assert "| dab | 52.00 (s0) / 75.00 (s2) | 63.50 ± " in text
    assert f"| {diff:+.2f} ± {diff_half:.2f} (n=2) |" in text
    assert "Unfinished (no manifest yet): " + str(tmp_path / "dab1") in text


def test_table_errors_name_the_problem(tmp_path):
    a, b = _run(tmp_path / "a", 0, 0.5), _run(tmp_path / "b", 0, 0.6)
    with pytest.raises(ValueError, match="two runs of seed 0"):
        zoo_runs.table({"x": [a, b]}, "accuracy")
    with pytest.raises(ValueError, match="'loss' is not in"):
        zoo_runs.table({"x": [a]}, "loss")
    (tmp_path / "a" / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="several manifests"):
        zoo_runs.table({"x": [a]}, "accuracy")
