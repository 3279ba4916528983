"""Built-in reward functions. Importing this package registers them in
:data:`grpo_kit.contract.REWARDS`; see that module for the reward contract."""

from rewards import countdown, format, length, match, math, model, process, repetition  # noqa: F401  (registration)
from rewards import reasoning_gym  # noqa: F401  (registration; imports reasoning-gym only when it scores)
from rewards import http, judge  # noqa: F401  (registration: the remote rewards)
from rewards import tools  # noqa: F401  (registration: rewards over tool calls)
