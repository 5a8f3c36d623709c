"""The zoo's categorical VAE recipe with a study estimator in place of the residual DAB.

`python -m benchmarks.study vae-recipe --estimator dab_mean --seed 0 --data mnist.npz --out DIR` trains
`dab_keras.zoo.DiscreteVAE` exactly as `dab-zoo train discrete_vae --estimator dab --dab-residual` does
(`dab_keras.zoo.train`: data, Adam with cosine decay, τ annealing, 60 epochs, weights, manifest, log,
`--resume`), except that the sampling layer's estimator is the study's candidate (a residual variant of
`DAB` from `benchmarks.study.estimators`) with the zoo's approximator network (a dense tanh MLP over the
categories, `approximator_units`) and base. The manifest records the zoo's `dab` with `dab_residual` and
the candidate's name under `study_estimator`; the zoo cannot load such weights by name, only this
command's evaluation reads them.
"""

import json
import os
import sys

#: Study estimators this command accepts: residual DAB variants that keep the zoo's base.
CANDIDATES = ("dab_mean",)


def candidate_task(candidate):
    """A `dab_keras.zoo` task: the categorical VAE's recipe whose residual DAB is `candidate`'s class.

    Args:
        candidate: A name in `CANDIDATES`.

    Returns:
        A `dab_keras.zoo.vae.VAETask` named `discrete_vae-<candidate>` (not registered).
    """
    from benchmarks.study import tasks
    from dab_keras import layers as dk_layers
    from dab_keras.zoo import vae as zoo_vae

    class CandidateVAETask(zoo_vae.VAETask):
        def __init__(self):
            super().__init__("categorical")
            self.name = f"discrete_vae-{candidate}"

        def build(self, estimator, weights=None, **config):
            if estimator != "dab" or not config.pop("dab_residual", False):
                raise ValueError(f"{self.name} trains the residual DAB only. Received: estimator={estimator!r}")
            units = config.get("approximator_units", (64,))
            categories = config.get("categories", 10)
            template = tasks.make_estimator(candidate)
            kwargs = {**template.get_config(), "temperature": config.get("temperature", 1.0)}
            kwargs["approximator"] = dk_layers.AxisMLP((categories,), units=units, name="approximator")
            replacement = type(template)(**kwargs)
            model = zoo_vae.DiscreteVAE(estimator=replacement, weights=None, **config)
            if weights is not None:  # this task's own run (its manifest names this task, not the zoo's)
                model.load_weights(str(weights))
            return model

    return CandidateVAETask()


def add_arguments(parser):
    parser.add_argument("--estimator", required=True, choices=CANDIDATES, help="the study estimator to train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", required=True, help="MNIST .npz in Keras's layout, or 'tfds'")
    parser.add_argument("--decoder-codes", default="auto", choices=("auto", "hard", "relaxed"),
                        help="the zoo's decoder_codes (default: auto)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's 60")
    parser.add_argument("--out", required=True, help="run folder (weights, manifest, log)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")


def main(args, command):
    from dab_keras.zoo import registry
    from dab_keras.zoo import training as zoo_training

    if args.data != "tfds" and not os.path.isfile(args.data):
        print(f"`--data` must be an MNIST .npz file or 'tfds'. Received: --data {args.data}", file=sys.stderr)
        return 2
    task = candidate_task(args.estimator)
    config = {"dab_residual": True}
    if args.decoder_codes != "auto":
        config["decoder_codes"] = args.decoder_codes
    registry.register(task)  # train() looks its task up by name; registered for this run only
    try:
        result = zoo_training.train(
            task.name, estimator="dab", epochs=args.epochs, seed=args.seed, data=args.data, output_dir=args.out,
            resume=args.resume, command=command, config=config, verbose=2,
        )
    finally:
        registry.unregister(task.name)
    manifest_path = result.get("manifest")
    if manifest_path:
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest["study_estimator"] = args.estimator
        with open(manifest_path, "w") as f:
            json.dump(manifest, f, indent=2)
    print(json.dumps(result.get("metrics") or {}, indent=2))
    return 0
