"""The `dab-zoo` command line: help, one-line errors, list, train, evaluate, resume."""

import csv
import json
import os
import subprocess
import sys

import pytest

from dab_keras.zoo import cli

TINY = ["--samples", "1024", "--batch-size", "256", "--quiet"]


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["demo", "--help"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "usage: dab-zoo" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "sorter", "--samples", "-5"], "expected a positive integer"),
        (["train", "sorter", "--lr", "zero"], "expected a positive number"),
        (["train", "sorter", "--estimator", "gumbel"], "invalid choice"),
        (["train", "sorter", "--samples", "100", "--epochs", "2"], "not allowed with argument"),
        (["train", "no_such_model", *TINY], "Unknown zoo model 'no_such_model'"),
        (["evaluate", "sorter", "--weights", "missing.weights.h5"], "No file at missing.weights.h5"),
        (["train", "sorter", "--samples", "10", "--batch-size", "64", "--quiet"], "at least the batch size"),
    ],
)
def test_bad_arguments_give_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_list_shows_every_model(capsys):
    from dab_keras import zoo

    code, out, _ = _run(capsys, "list")
    assert code == 0
    for name in zoo.list_models():
        assert name in out


def test_train_then_evaluate_the_written_weights(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = _run(capsys, "train", "sorter", "--estimator", "straight_through", "--output", str(out_dir),
                        "--seed", "3", *TINY)
    assert code == 0
    weights = out_dir / "sorter-straight_through.weights.h5"
    assert f"weights: {weights}" in out
    manifest = json.loads((out_dir / "sorter-straight_through.json").read_text())
    assert manifest["command"] == (
        f"dab-zoo train sorter --estimator straight_through --output {out_dir} --seed 3 " + " ".join(TINY)
    )
    accuracy = [line for line in out.splitlines() if line.startswith("per_position_accuracy:")][0]
    code, out, _ = _run(capsys, "evaluate", "sorter", "--estimator", "straight_through", "--weights", str(weights))
    assert code == 0
    assert accuracy in out.splitlines()  # the same test set, the same weights: the same number


def test_a_second_run_in_the_same_folder_needs_resume(capsys, tmp_path):
    argv = ["train", "sorter", "--estimator", "straight_through", "--output", str(tmp_path),
            "--samples", "2048", "--batch-size", "256", "--steps-per-epoch", "4", "--quiet"]
    assert _run(capsys, *argv)[0] == 0
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err


def test_resume_continues_from_the_last_epoch(capsys, tmp_path):
    base = ["train", "sorter", "--estimator", "dab", "--output", str(tmp_path), "--batch-size", "256",
            "--steps-per-epoch", "2", "--quiet"]
    assert _run(capsys, *base, "--epochs", "2")[0] == 0
    assert _run(capsys, *base, "--epochs", "3", "--resume")[0] == 0
    with open(tmp_path / "log.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2]  # the resumed run trained epoch 2 only


def test_backend_flag_restarts_under_that_backend(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run(
        [sys.executable, "-m", "dab_keras.zoo.cli", "train", "sorter", "--backend", "jax", "--estimator", "dab",
         "--output", str(tmp_path), *TINY],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "sorter-dab.json").read_text())
    assert manifest["backend"] == "jax" and manifest["samples_seen"] == 1024


def test_demo_trains_both_estimators_and_prints_a_table(capsys):
    code, out, _ = _run(capsys, "demo", "--samples", "2048", "--quiet")
    assert code == 0
    table = out[out.index("Test accuracy on 100,000 fresh sequences"):].splitlines()
    assert table[1].split() == ["estimator", "sequences", "all-or-none", "per-position", "sequences/s", "seconds"]
    rows = [line.split() for line in table[2:4]]
    assert [r[0] for r in rows] == ["dab", "straight_through"]
    for r in rows:
        assert r[1] == "2,048" and 0.0 <= float(r[2]) <= float(r[3]) <= 1.0
