"""The `dab-zoo` command line: help, one-line errors, list, train, evaluate, resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dab_keras import zoo
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
        (["train", "sorter", "--samples", "-5"], "`samples` must be a whole number >= 1. Received: samples=-5"),
        (["train", "sorter", "--samples", "1e400"], "Received: samples=inf"),
        (["train", "sorter", "--batch-size", "2.5"], "`batch_size` must be a whole number >= 1 (e.g. 3e6). "
                                                      "Received: batch_size=2.5"),
        (["train", "sorter", "--epochs", "0"], "`epochs` must be a whole number >= 1"),
        (["train", "sorter", "--seed", "-1"], "`seed` must be a whole number >= 0"),
        (["train", "sorter", "--steps-per-execution", "0.5"], "`steps_per_execution` must be a whole number"),
        (["train", "sorter", "--lr", "zero"], "argument --lr: expected a number, got 'zero'"),
        (["train", "sorter", "--lr", "inf"], "`learning_rate` must be a finite number in (0, 1]. "
                                             "Received: learning_rate=inf"),
        (["train", "sorter", "--lr", "1e300"], "Received: learning_rate=1e+300"),
        (["train", "sorter", "--lr", "nan"], "Received: learning_rate=nan"),
        (["train", "sorter", "--lr=-1e-3"], "Received: learning_rate=-0.001"),
        (["train", "sorter", "--estimator", "gumbel"], "invalid choice"),
        (["train", "sorter", "--samples", "100", "--epochs", "2"], "not allowed with argument"),
        (["train", "sorter", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["train"], "the following arguments are required: model"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "no_such_model", *TINY], "Unknown zoo model 'no_such_model'"),
        (["train", "mnist_classifier", "--data", "{npz}", "--steps-per-epoch", "5"],
         "`steps_per_epoch` applies to synthetic data only"),
        (["train", "mnist_classifier", "--data", "missing.npz"], "No MNIST .npz file at `data`"),
        (["evaluate", "sorter", "--weights", "missing.weights.h5"], "No file at missing.weights.h5"),
        (["train", "sorter", "--samples", "10", "--batch-size", "64", "--quiet"], "at least the batch size"),
        (["train", "sorter", "--estimator", "straight_through", "--dab-residual", *TINY],
         "`dab_residual=True` needs estimator='dab' (given by name). Received: estimator='straight_through'"),
        (["train", "discrete_vae", "--dab-residual", *TINY], "Received: estimator='relaxed'"),  # its default
        (["train", "sorter", "--sample-gradient", "reinmax", *TINY],
         "`sample_gradient` applies to the discrete VAEs only. Received: model 'sorter'"),
        (["train", "discrete_vae", "--estimator", "dab", "--sample-gradient", "reinmax", *TINY],
         "`sample_gradient='reinmax'` sets the base gradient of 'straight_through' and of the residual DAB"),
        (["evaluate", "discrete_vae", "--sample-gradient", "reinmax"], "Received: estimator='relaxed'"),
        (["train", "discrete_vae", "--sample-gradient", "gumbel"], "invalid choice: 'gumbel'"),
        (["train", "sorter", "--checkpoint-every", "0", *TINY], "`checkpoint_every` must be a whole number >= 1"),
        (["train", "sorter", "--checkpoint-every", "1.5", *TINY], "Received: checkpoint_every=1.5"),
    ],
)
def test_bad_arguments_give_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    npz = tmp_path.parent / f"{tmp_path.name}-mnist.npz"  # a tiny MNIST-layout file outside the run folder
    images = np.zeros((4, 28, 28), np.uint8)
    np.savez(npz, x_train=images, y_train=[0, 1, 2, 3], x_test=images[:2], y_test=[7, 9])
    with pytest.raises(SystemExit) as exc:
        cli.main([a.replace("{npz}", str(npz)) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # no usage block, no traceback
    assert message in err[0]
    assert not list(tmp_path.iterdir())  # refused before any work: no run folder


def test_help_still_prints_the_usage_and_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: dab-zoo train") and "--steps-per-execution" in out and "--tensorboard" in out


def test_numbers_in_scientific_notation_are_whole_numbers():
    args = cli.build_parser().parse_args(["train", "sorter", "--samples", "3e6", "--batch-size", "256.0", "--lr",
                                          "2e-3"])
    assert (args.samples, args.batch_size, args.lr) == (3_000_000, 256, 0.002)
    assert isinstance(args.samples, int) and isinstance(args.batch_size, int)


def test_weights_none_gives_a_random_model_as_the_hint_says(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "sorter", "--estimator", "relaxed"])
    err = capsys.readouterr().err
    assert "--weights none" in err  # the hint of the missing pretrained weights
    code, out, _ = _run(capsys, "evaluate", "sorter", "--estimator", "relaxed", "--weights", "none")
    assert code == 0
    accuracy = float(out.split("all_or_none_accuracy:")[1].split()[0])
    assert accuracy < 0.01  # random initialization: almost no sequence sorted


def _bad_weight_files(folder):
    from dab_keras.zoo import weights

    sorter = weights.pretrained_path("sorter", "dab").read_bytes()
    (folder / "empty.weights.h5").write_bytes(b"")
    (folder / "truncated.weights.h5").write_bytes(sorter[: len(sorter) // 2])
    (folder / "text.weights.h5").write_bytes(b"hello")
    (folder / "other.weights.h5").write_bytes(weights.pretrained_path("mnist_classifier", "dab").read_bytes())
    (folder / "badjson.weights.h5").write_bytes(sorter)
    (folder / "badjson.json").write_text("{not json")
    return {
        "empty.weights.h5": "is empty (0 bytes)",
        "truncated.weights.h5": "cannot be read (damaged or truncated?)",
        "text.weights.h5": "is not an HDF5 .weights.h5 file",
        "other.weights.h5": "hidden_0/kernel has shape (10, 128), the file holds (3136, 128)",
        "badjson.weights.h5": "badjson.json is not valid JSON",
    }


def test_damaged_or_foreign_weight_files_give_one_line_naming_the_file(capsys, tmp_path):
    for name, message in _bad_weight_files(tmp_path).items():
        with pytest.raises(SystemExit) as exc:
            cli.main(["evaluate", "sorter", "--weights", str(tmp_path / name)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (name, err)
        assert str(tmp_path) in err[0]


def test_offline_tfds_fails_within_seconds_and_names_the_data_option(capsys, monkeypatch, tmp_path):
    import time

    from dab_keras.zoo import data

    monkeypatch.setattr(data, "_tfds_prepared", lambda data_dir=None: False)
    monkeypatch.setattr(data, "can_reach", lambda address=data.TFDS_HOST, timeout=3.0: False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "mnist_classifier"])
    assert time.perf_counter() - start < 10
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data PATH/mnist.npz" in err[0]


def test_steps_per_execution_never_changes_the_length_of_the_run(capsys, tmp_path):
    for argv, steps in [(["--samples", "2048", "--steps-per-execution", "500"], 8),
                        (["--samples", str(256 * 15), "--steps-per-epoch", "5", "--steps-per-execution", "4"], 15)]:
        out_dir = tmp_path / str(steps)
        code, _, _ = _run(capsys, "train", "sorter", "--estimator", "straight_through", "--batch-size", "256",
                          "--no-jit", "--quiet", "--output", str(out_dir), *argv)
        assert code == 0
        manifest = json.loads((out_dir / "sorter-straight_through.json").read_text())
        assert manifest["steps"] == steps and manifest["samples_seen"] == 256 * steps


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


def test_train_and_evaluate_a_residual_dab(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "train", "sorter", "--estimator", "dab", "--dab-residual", *TINY)
    assert code == 0
    out_dir = tmp_path / "dab_zoo_runs" / "sorter-dab_residual"  # not the paper's DAB run folder
    weights = out_dir / "sorter-dab.weights.h5"
    assert f"weights: {weights.relative_to(tmp_path)}" in out
    manifest = json.loads((out_dir / "sorter-dab.json").read_text())
    assert manifest["config"]["dab_residual"] is True and manifest["estimator"] == "dab"
    assert manifest["command"] == "dab-zoo train sorter --estimator dab --dab-residual " + " ".join(TINY)
    run = json.loads((out_dir / "run.json").read_text())
    assert run["arguments"]["config"] == {"dab_residual": True}
    accuracy = [line for line in out.splitlines() if line.startswith("per_position_accuracy:")][0]
    # evaluate rebuilds the model as the manifest beside the weights says: a residual DAB.
    code, out, _ = _run(capsys, "evaluate", "sorter", "--estimator", "dab", "--weights", str(weights))
    assert code == 0 and accuracy in out.splitlines()
    # The Python API without the manifest's settings refuses, naming the argument.
    with pytest.raises(ValueError, match=r"dab_residual=False \(weights: True\)"):
        zoo.Sorter(estimator="dab", weights=weights)


@pytest.mark.parametrize("model, estimator, message", [
    ("binary_vae", "dab", "No pretrained weights ship for model 'binary_vae' with estimator='dab_residual'"),
    ("sorter", "relaxed", "`dab_residual=True` needs estimator='dab'"),
])
def test_evaluate_dab_residual_names_what_ships_and_needs_the_dab_estimator(capsys, model, estimator, message):
    if estimator == "dab":
        assert "dab_residual" not in zoo.weights.shipped_keys(model)
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", model, "--estimator", estimator, "--dab-residual"])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_second_run_in_the_same_folder_needs_resume(capsys, tmp_path):
    argv = ["train", "sorter", "--estimator", "straight_through", "--output", str(tmp_path),
            "--samples", "2048", "--batch-size", "256", "--steps-per-epoch", "4", "--quiet"]
    assert _run(capsys, *argv)[0] == 0
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err


_FINISHED = {"--estimator": "dab", "--samples": "2048", "--batch-size": "256", "--steps-per-epoch": "4",
             "--lr": "0.002", "--seed": "0"}


def _train_argv(folder, options, *flags):
    return ["train", "sorter", "--output", str(folder), "--quiet", *[x for kv in options.items() for x in kv], *flags]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finished")
    assert cli.main(_train_argv(folder, _FINISHED)) == 0
    return folder


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    "change, flags, message",
    [
        ({"--lr": "0.01"}, [], "learning_rate=0.01 (the run: 0.002)"),
        ({"--batch-size": "128"}, [], "batch_size=128 (the run: 256)"),
        ({"--seed": "1"}, [], "seed=1 (the run: 0)"),
        ({"--estimator": "straight_through"}, [], "estimator='straight_through' (the run: 'dab')"),
        ({"--samples": "4096"}, [], "epochs=4 (the run: 2)"),
        ({"--steps-per-epoch": "2"}, [], "steps_per_epoch=2 (the run: 4)"),
        ({}, ["--no-jit"], "jit_compile=False (the run: True)"),
        ({}, ["--dab-residual"], "config={'dab_residual': True} (the run: {})"),
    ],
)
def test_resume_refuses_arguments_that_change_the_run(finished_run, change, flags, message, capsys):
    before = _snapshot(finished_run)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(_train_argv(finished_run, {**_FINISHED, **change}, *flags, "--resume"))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "resume" in err[0], err
    assert _snapshot(finished_run) == before


def test_resume_of_a_finished_run_changes_nothing(finished_run, capsys):
    before = _snapshot(finished_run)
    capsys.readouterr()
    code, out, _ = _run(capsys, *_train_argv(finished_run, _FINISHED, "--resume"))
    assert code == 0 and "is complete; nothing was trained" in out
    assert _snapshot(finished_run) == before  # the manifest keeps its command and train_seconds


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


def test_demo_names_the_runs_it_can_compare():
    from dab_keras.zoo import demo

    with pytest.raises(ValueError, match=r"`estimators` must be names among \['dab', 'straight_through', "
                                         r"'relaxed', 'dab_residual'\]. Received: estimators=\('dab', 'paper'\)"):
        demo.run(samples=2048, estimators=("dab", "paper"))


def test_demo_trains_the_default_dab_the_papers_and_straight_through_and_prints_a_table(capsys, monkeypatch):
    from dab_keras.zoo import training

    trained, train = [], training.train

    def recording(model, **kwargs):
        result = train(model, **kwargs)
        trained.append((kwargs["estimator"], zoo.weights.read_manifest(result["manifest"])["config"]))
        return result

    monkeypatch.setattr(training, "train", recording)
    code, out, _ = _run(capsys, "demo", "--samples", "2048", "--quiet")
    assert code == 0
    assert [(e, c.get("dab_residual", False)) for e, c in trained] == [
        ("dab", True), ("dab", False), ("straight_through", False)]
    table = out[out.index("Test accuracy on 100,000 fresh sequences"):].splitlines()
    assert table[1].split() == ["estimator", "sequences", "all-or-none", "per-position", "sequences/s", "seconds"]
    rows = [line.split() for line in table[2:5]]
    assert [r[0] for r in rows] == ["dab_residual", "dab", "straight_through"]
    for r in rows:
        assert r[1] == "2,048" and 0.0 <= float(r[2]) <= float(r[3]) <= 1.0


def test_a_diverged_run_exits_with_status_1_and_one_line(capsys, monkeypatch):
    from dab_keras import zoo
    from dab_keras.zoo import training

    def diverge(*args, **kwargs):
        raise training.NonFiniteLossError("Training stopped: loss=nan in epoch 3; ...")

    monkeypatch.setattr(zoo, "train", diverge)
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "sorter", "--quiet"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dab-zoo train: error: Training stopped: loss=nan in epoch 3; ..."]
