r"""The terms of the discrete VAE's bounds: the Bernoulli reconstruction loss and the analytic KL terms.

Pure `keras.ops` functions of logits, in nats per example, used by `dab_keras.zoo.vae_model`:

$$ -\log p(x \mid z) = \sum_{i} \operatorname{softplus}(a_i) - x_i a_i \quad (a = \text{decoder logits}), $$

$$ \mathrm{KL}\big(\textstyle\prod_g \mathrm{Cat}(\pi_g) \,\|\, \prod_g \mathrm{Cat}(1/K)\big)
   = \sum_g \sum_k \pi_{g,k} \log \pi_{g,k} + G \log K, \qquad \pi_g = \operatorname{softmax}(\ell_g), $$

$$ \mathrm{KL}\big(\textstyle\prod_j \mathrm{Bernoulli}(q_j) \,\|\, \prod_j \mathrm{Bernoulli}(1/2)\big)
   = \sum_j q_j \log q_j + (1 - q_j) \log(1 - q_j) + D \log 2, \qquad q_j = \sigma(\ell_j). $$
"""

import math

from keras import ops


def bernoulli_neg_log_likelihood(x, logits):
    r"""−log p(x|z) of independent Bernoulli pixels, summed per example: Σ softplus(a) − x·a.

    $$ -\log p(x \mid z) = \sum_i \operatorname{softplus}(a_i) - x_i a_i, $$

    the Bernoulli cross-entropy with logits $a$, stable for large $|a|$.

    Args:
        x: `(B, ...)` targets in {0, 1} (or in [0, 1]).
        logits: Bernoulli logits, as many values per example as `x` has, in any shape with batch axis B.

    Returns:
        float32 `(B,)`, in nats.

    Examples:
        >>> import numpy as np
        >>> x = np.zeros((2, 28, 28, 1), "float32")
        >>> nll = bernoulli_neg_log_likelihood(x, np.zeros_like(x))  # 784 log 2 each
        >>> np.asarray(nll, "float64").round(2).tolist()
        [543.43, 543.43]
    """
    x = ops.reshape(ops.cast(x, "float32"), (ops.shape(x)[0], -1))
    logits = ops.reshape(ops.cast(logits, "float32"), (ops.shape(x)[0], -1))
    return ops.sum(ops.softplus(logits) - x * logits, axis=-1)


def categorical_kl_to_uniform(logits):
    """KL(∏_g Cat(softmax(ℓ_g)) ‖ ∏_g Cat(1/K)) = Σ_g Σ_k π log π + G log K, per example.

    Args:
        logits: `(B, G, K)` posterior logits (G and K known).

    Returns:
        float32 `(B,)` in [0, G log K], in nats.

    Examples:
        >>> import numpy as np
        >>> logits = np.stack([np.zeros((2, 4)), [[100.0, 0, 0, 0], [0, 0, 100.0, 0]]])
        >>> np.asarray(categorical_kl_to_uniform(logits), "float64").round(4).tolist()  # 0 and 2 log 4
        [0.0, 2.7726]
    """
    logits = ops.cast(logits, "float32")
    log_pi = ops.log_softmax(logits, axis=-1)
    groups, categories = logits.shape[-2], logits.shape[-1]
    return ops.sum(ops.exp(log_pi) * log_pi, axis=(-2, -1)) + groups * math.log(categories)


def bernoulli_kl_to_uniform(logits):
    """KL(∏_j Bernoulli(σ(ℓ_j)) ‖ ∏_j Bernoulli(1/2)) = Σ_j q log q + (1 − q) log(1 − q) + D log 2.

    Here q_j = σ(ℓ_j), with log q and log(1 − q) computed as −softplus(∓ℓ) (stable for large |ℓ|).

    Args:
        logits: `(B, D)` posterior logits (D known).

    Returns:
        float32 `(B,)` in [0, D log 2], in nats.

    Examples:
        >>> import numpy as np
        >>> logits = np.array([[0.0, 0.0, 0.0], [100.0, -100.0, 0.0]])
        >>> np.asarray(bernoulli_kl_to_uniform(logits), "float64").round(4).tolist()  # 0 and 2 log 2
        [0.0, 1.3863]
    """
    logits = ops.cast(logits, "float32")
    log_q, log_1mq = -ops.softplus(-logits), -ops.softplus(logits)
    q = ops.sigmoid(logits)
    per_bit = q * log_q + (1.0 - q) * log_1mq
    return ops.sum(per_bit, axis=-1) + logits.shape[-1] * math.log(2.0)
