"""``python -m grpo_kit VERB ...``, the same as ``grpo-kit VERB ...``; what ``torchrun -m grpo_kit``
launches on every rank."""

import sys

from grpo_kit.cli import main

if __name__ == "__main__":
    sys.exit(main())
