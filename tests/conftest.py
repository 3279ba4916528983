import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixture_rewards.py"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def fixture(name: str) -> str:
    """A reward spec for a function of tests/fixture_rewards.py."""
    return f"{FIXTURES}:{name}"


@pytest.fixture
def fx():
    return fixture
