"""dab_keras: trainable non-differentiable functions for Keras 3.

Hard ops (sign, quantize, vector quantize, argmax, sort, top-k) as Keras layers, each trained through one
of three gradient estimators chosen with `estimator=`: straight-through, relaxed, or DAB (differentiable
approximation bridge, Ramapuram & Webb 2019, arXiv:1905.03658).

Modules, in import order: `ops` (pure math) → `estimators` (gradient rules) → `layers` (Keras state) →
`callbacks`, `inference` (`summary`, `export_inference`, also at the top level); `losses` and `metrics`
(Spearman's rank correlation) build on `ops`.
"""

from dab_keras import callbacks, estimators, inference, layers, losses, metrics, ops
from dab_keras.inference import export_inference, summary
from dab_keras.version import __version__

__all__ = [
    "__version__",
    "callbacks",
    "estimators",
    "export_inference",
    "inference",
    "layers",
    "losses",
    "metrics",
    "ops",
    "summary",
]
