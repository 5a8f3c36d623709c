"""The JAX path without TensorFlow (as on machines with JAX only): nothing in `dab_keras`, the zoo or the
`dab-zoo` command imports TensorFlow or TensorFlow Datasets to import, train and evaluate the sorter."""

from jax_runs import run_jax

_BLOCKED = """
    import contextlib, io, json, sys

    class Absent:  # as if TensorFlow were not installed
        attempts = []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tensorflow_probability", "tf_keras"):
                self.attempts.append(name)
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Absent())
    import dab_keras
    from dab_keras import zoo
    from dab_keras.zoo import cli, device_data, distribute
    at_import = list(Absent.attempts)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = cli.main(["train", "sorter", "--estimator", "straight_through", "--samples", "1024",
                           "--batch-size", "256", "--steps-per-epoch", "2", "--output", sys.argv[1], "--quiet"])
    manifest = json.load(open(sys.argv[1] + "/sorter-straight_through.json"))
    json.dump({"at_import": at_import, "status": status, "stdout": out.getvalue(),
               "backend": manifest["backend"], "data": manifest["data"],
               "loaded": sorted(m for m in sys.modules if m.split(".")[0].startswith("tensorflow"))}, sys.stdout)
"""


def test_import_train_and_evaluate_the_sorter_on_jax_without_tensorflow(tmp_path):
    out = run_jax(_BLOCKED, tmp_path / "run")
    assert out["at_import"] == []  # importing never even tries
    assert out["status"] == 0 and out["backend"] == "jax"
    assert "per_position_accuracy:" in out["stdout"]  # evaluated on the test set
    assert out["loaded"] == []
