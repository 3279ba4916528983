"""Reward models: ``grpo-kit rm train`` (:mod:`grpo_kit.rm.train`, a Bradley-Terry RM on preference
pairs, its built-in demo in :mod:`grpo_kit.rm.demo`) and ``grpo-kit rm eval``
(:mod:`grpo_kit.rm.evaluate`, an RM and rule rewards on one table of pairs)."""
