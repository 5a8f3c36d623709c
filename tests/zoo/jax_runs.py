"""Runs short scripts in a JAX subprocess, so that zoo tests of the JAX path run under either backend."""

import json
import os
import subprocess
import sys
import textwrap

SMALL = {"length": 6, "hidden_units": [32], "latent_units": 24, "approximator_units": [8]}


def run_jax(script, *args, env=None, timeout=300):
    """Runs `script` with KERAS_BACKEND=jax and returns the JSON object on its last stdout line."""
    environ = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    if "XLA_FLAGS" not in (env or {}):
        environ.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=environ,
        cwd=os.path.dirname(os.path.abspath(__file__)),  # not the checkout: the installed package
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
