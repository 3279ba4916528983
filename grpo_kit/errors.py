"""The user-facing error type, importable from every layer (it imports nothing).

A :class:`ConfigError` is a mistake the user can fix (a config value, a name, a path): the command
line prints its message on one line and exits 2. Anything else is a bug and keeps its traceback.
"""


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key and the fix."""


class RolloutProcessError(RuntimeError):
    """Asynchronous training: the rollout process died, failed (its error in the message), or sent
    nothing for ``distributed.timeout_s``. The command line prints the message and exits 1."""
