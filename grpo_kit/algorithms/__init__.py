"""The mathematics of GRPO and PPO as pure tensor functions: advantages, losses, log-probs.

No model, no config object, no I/O, no ``.item()``; nothing but torch (and the zero-dependency
:mod:`grpo_kit.errors`) is imported. Dimensions: B prompts or sequences, G completions per prompt, T
completion tokens, V vocabulary. The README's "algorithm core" section has the table of variants
(GRPO, Dr. GRPO, DAPO, GSPO, RLOO, REINFORCE++-baseline, PPO; the policy losses of
:data:`POLICY_LOSSES`) and the switches that select them.
"""

from grpo_kit.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageEstimator,
    gae,
    get_advantage_estimator,
    group_advantages,
    rewards_at_last_token,
    whiten,
)
from grpo_kit.algorithms.fused import hidden_logprobs
from grpo_kit.algorithms.logprobs import token_entropy, token_logprobs
from grpo_kit.algorithms.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    AdaptiveKLController,
    FixedKLController,
    aggregate,
    entropy_loss,
    kl_in_reward,
    kl_penalty,
    policy_loss,
    rollout_correction,
    top_entropy_mask,
    truncated_is_weights,
    value_loss,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "AdaptiveKLController",
    "AdvantageEstimator",
    "FixedKLController",
    "aggregate",
    "entropy_loss",
    "gae",
    "get_advantage_estimator",
    "group_advantages",
    "hidden_logprobs",
    "kl_in_reward",
    "kl_penalty",
    "policy_loss",
    "rewards_at_last_token",
    "rollout_correction",
    "token_entropy",
    "token_logprobs",
    "top_entropy_mask",
    "truncated_is_weights",
    "value_loss",
    "whiten",
]
