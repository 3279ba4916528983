"""The package layers (pyproject's import-linter contracts) hold, and a cycle brought back breaks them.

`lint-imports` is import-linter's own checker: the contracts are not ours to interpret.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT)], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory):
    """A copy of the three packages and the contracts, to plant imports in."""
    def make(plant: dict[str, str]) -> Path:
        root = tmp_path_factory.mktemp("tree")
        for pkg in ("grpo_kit", "rewards", "tasks"):
            shutil.copytree(ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", root)
        for rel, line in plant.items():
            with open(root / rel, "a") as f:
                f.write(f"\n{line}  # noqa\n")
        return root
    return make


def test_the_contracts_hold():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


@pytest.mark.parametrize("rel, line, broken", [
    # cycle 1 of the issue: a reward importing the registry that imports the rewards
    ("rewards/format.py", "from grpo_kit.registry import get_reward", "layers"),
    # cycle 2: the workers importing the scorer that runs them
    ("grpo_kit/workers.py", "import grpo_kit.scoring", "layers"),
    # cycle 3: the task config importing the tasks package, even inside a function
    ("tasks/catalog.py", "def _late():\n    from tasks import config", "no import cycles"),
    # the maths reaching into the engine
    ("grpo_kit/algorithms/losses.py", "from grpo_kit import config", "the maths imports nothing"),
])
def test_a_planted_import_breaks_a_contract(tree_copy, rel, line, broken):
    out = lint(tree_copy({rel: line}))
    assert out.returncode != 0
    assert any(l.startswith(broken) and l.rstrip().endswith("BROKEN") for l in out.stdout.splitlines()), out.stdout
