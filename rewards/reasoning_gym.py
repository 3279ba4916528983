"""The ``reasoning_gym`` reward: reasoning-gym's verifiers, minus the ones that execute model output.

Reads the columns the ``reasoning_gym`` task writes: ``rg_dataset`` (a dataset name), ``rg_entry``
(the entry, as JSON from :func:`encode_entry`) and ``rg_config`` (the dataset's settings, JSON;
optional). The answer is the last ``<answer>...</answer>`` after the last ``</think>``; a completion
without one scores 0.0. The answer is then scored by one of three policies, fixed per dataset by
an audit of reasoning-gym 0.1.25's source (:mod:`rewards._rg_audit`):

- **allowed** (:data:`ALLOWED`): the dataset's own ``score_answer``, whose closure the audit found
  free of ``eval``/``exec``/sympy/subprocess and the like. Each is pinned by the digest of the audited
  source: a reasoning-gym version that changes a listed scorer is refused until re-audited. It
  runs under a guard (a :func:`sys.addaudithook` hook, active only during the call) that blocks
  compiling or executing code from a string, starting processes and writing files, and turns any
  such attempt into a failure of the reward.
- **ours** (:data:`OURS`): our re-implementation of a scorer that evaluates text: countdown and
  puzzle24 through :func:`rewards.countdown.evaluate` (exact fractions, no ``sympy``); the answers
  that reasoning-gym reads with ``eval`` (lists, grids) through :func:`rewards._literal.parse_literal`;
  polynomial_multiplication's and simple_integration's sums of monomials through
  :func:`rewards._rg_scorers.polynomial`
  (the latter differentiated exactly). See :mod:`rewards._rg_scorers`.
- **refused** (:data:`REFUSED`): intermediate_integration, whose scorer parses the answer with sympy
  (which evaluates it as Python) and has no parser of ours, and composite, which dispatches to other
  scorers. A row of one raises an error naming the dataset and the
  reason, unless ``unsafe_scorer: true``, which runs reasoning-gym's scorer as it is, unguarded, and
  only inside a reward worker process (``scoring.workers >= 1``). **Unsafe**: a policy can learn to
  run code on the scoring machine.

>>> import json
>>> entry = {"question": "...", "answer": "3", "metadata": {}}
>>> reasoning_gym(["<think>hmm</think><answer>3</answer>", "<answer>4</answer>", "3"],
...               rg_dataset=["leg_counting"] * 3, rg_entry=[encode_entry(entry)] * 3)
[1.0, 0.0, 0.0]
>>> e = {"question": "...", "answer": "2*3*4*1", "metadata": {"numbers": [1, 2, 3, 4]}}
>>> reasoning_gym(["<answer>(1+2+3)*4</answer>", "<answer>__import__('os').system('ls')</answer>"],
...               rg_dataset=["puzzle24"] * 2, rg_entry=[encode_entry(e)] * 2)
[1.0, 0.01]
"""

from __future__ import annotations

import json
import math
import os
import sys
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from grpo_kit.contract import completion_text, reward
from rewards._rg_scorers import OURS
from rewards.countdown import extract_equation

AUDITED_VERSION = "0.1.25"

# ------------------------------------------------------------------------------------------ policy
# name -> digest of the audited scorer closure (rewards._rg_audit.audit(cls).digest)
ALLOWED: dict[str, str] = {
    "ab": "ad7feceef7099749", "acre": "7e1b65de2faffa84", "advanced_geometry": "51cd978141079689",
    "aiw": "7e1b65de2faffa84", "arc_1d": "7e1b65de2faffa84", "arc_agi": "2b48a7a98d3142ab",
    "base_conversion": "7e1b65de2faffa84", "basic_arithmetic": "7e1b65de2faffa84", "bf": "7e1b65de2faffa84",
    "binary_alternation": "7e1b65de2faffa84", "boxnet": "c8b6a6fe4fb84330", "caesar_cipher": "7e1b65de2faffa84",
    "calendar_arithmetic": "ae0b4aa38272117d", "chain_sum": "59631ffa5ea4d995", "circuit_logic": "e78848aa20a65e80",
    "codeio": "d1bbdb1b06e9c572", "coin_flip": "d4ff5025a88a1d9a", "color_cube_rotation": "415036753c71edcc",
    "complex_arithmetic": "985608d5d2b90d11", "count_bits": "7e1b65de2faffa84", "count_primes": "7e1b65de2faffa84",
    "course_schedule": "7e1b65de2faffa84", "cryptarithm": "4857490eeee0aa75",
    "decimal_arithmetic": "2ba4c83fd7633dd1", "decimal_chain_sum": "a0a8c37ab1d0a6b9", "dice": "a15eaeb1b6454ddb",
    "emoji_mystery": "f3338a97be1b4f29", "family_relationships": "36008474c3e59c89",
    "figlet_font": "02819bd40926d7b6", "fraction_simplification": "63970bb433278c18",
    "futoshiki": "6d4dc8c1d2c4a584", "game_of_life": "240b549d542923d2", "game_of_life_halting": "b48b716eb8ce35f4",
    "gcd": "7e1b65de2faffa84", "graph_color": "aa310265ba4e2d2c", "group_anagrams": "71f80af231ca45b6",
    "gsm_symbolic": "5af69088256a2535", "isomorphic_strings": "7e1b65de2faffa84", "jugs": "4438ff60273c2bfc",
    "kakurasu": "101982679544eba8", "knight_swap": "c941414a410aa3a3", "knights_knaves": "5887e9a7169951be",
    "largest_island": "7e1b65de2faffa84", "lcm": "7e1b65de2faffa84", "leg_counting": "7e1b65de2faffa84",
    "letter_counting": "7e1b65de2faffa84", "letter_jumble": "6834587c72818d3b", "list_functions": "7e1b65de2faffa84",
    "mahjong_puzzle": "7e1b65de2faffa84", "manipulate_matrix": "886bc7406156f9e9", "maze": "7e1b65de2faffa84",
    "mini_sudoku": "84c03479fa834040", "modulo_grid": "7e1b65de2faffa84", "needle_haystack": "858bb9b1c59e4a63",
    "number_filtering": "7e1b65de2faffa84", "number_format": "3bcfd6273b1ccc41",
    "number_sequence": "7e1b65de2faffa84", "palindrome_generation": "d8dd952df3eaed67",
    "palindrome_partitioning": "40e34a7f7d64f7c2", "path_star": "af207fb7a2b7dca7",
    "polynomial_equations": "6e3a2663ea9cafb1", "pool_matrix": "08a69dbb43cf66c3",
    "power_function": "deeee26e35c036c4", "prime_factorization": "b32c9399681de21e", "products": "b6f8f77483e48db1",
    "propositional_logic": "f17247129a19e63b", "quantum_lock": "3c40861f7e72f17a", "ransom_note": "7e1b65de2faffa84",
    "rearc": "c824d4b99a25e83a", "rectangle_count": "252980c18be8b7d6", "rotate_matrix": "7e1b65de2faffa84",
    "rotten_oranges": "7e1b65de2faffa84", "rush_hour": "bf847f28127f4e96", "self_reference": "547026832a71542f",
    "sentence_reordering": "0efdbefc979de347", "shortest_path": "925316832638a888",
    "simple_equations": "7e1b65de2faffa84", "simple_geometry": "7e1b65de2faffa84", "sokoban": "84f5b6d76a84674b",
    "spell_backward": "1d1a16978c1a6abc", "string_manipulation": "7e1b65de2faffa84",
    "string_splitting": "7e1b65de2faffa84", "string_synthesis": "7e1b65de2faffa84", "sudoku": "87c41165f950b20f",
    "survo": "0f8122663fab923e", "syllogism": "7e1b65de2faffa84", "time_intervals": "0dac94f6cb79c84b",
    "tower_of_hanoi": "5fa9c30eb68465ee", "tsumego": "349aef1131381de8", "word_ladder": "17d18b3ad4029fc7",
    "word_sequence_reversal": "7e1b65de2faffa84", "word_sorting": "e11e566b110413ab",
    "zebra_puzzles": "5556cb5006f5e30f",
}  # fmt: skip

REVIEWED: dict[str, tuple[str, str]] = {
    "rubiks_cube": ("aaa5e204468158a2", "the one finding is magiccube's CubePrintStr reading os.environ (the terminal's "
                    "colour mode); the moves are split by a regex and applied by magiccube's Cube, whose code "
                    "the walk covers"),
}
"""Allowed after reading the audit's findings: name -> (digest, why the findings are harmless)."""

REFUSED: dict[str, str] = {
    "intermediate_integration": "its scorer parses the answer with sympy.parse_expr, which evaluates it as Python",
    "composite": "it dispatches to other datasets' scorers (countdown's evaluates the answer); mix datasets "
                 "with the task's `datasets:` instead",
}


class RefusedScorer(ValueError):
    """A dataset whose scorer would evaluate model output, without ``unsafe_scorer: true``."""


# ------------------------------------------------------------------------------------ entry codec
def _tag(v: Any) -> Any:
    if isinstance(v, tuple):
        return {"__tuple__": [_tag(x) for x in v]}
    if isinstance(v, (set, frozenset)):
        return {"__set__": [_tag(x) for x in sorted(v, key=repr)]}
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v):
            return {k: _tag(x) for k, x in v.items()}
        return {"__dict__": [[_tag(k), _tag(x)] for k, x in v.items()]}
    if isinstance(v, list):
        return [_tag(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        return v.item()
    return v


def _untag(v: Any) -> Any:
    if isinstance(v, list):
        return [_untag(x) for x in v]
    if isinstance(v, dict):
        if len(v) == 1:
            (k, x), = v.items()
            if k == "__tuple__":
                return tuple(_untag(y) for y in x)
            if k == "__set__":
                return {_untag(y) for y in x}
            if k == "__dict__":
                return {_untag(a): _untag(b) for a, b in x}
        return {k: _untag(x) for k, x in v.items()}
    return v


def encode_entry(entry: dict) -> str:
    """A reasoning-gym entry as JSON that :func:`decode_entry` turns back into equal Python values
    (tuples, sets and dicts with non-string keys are tagged; plain JSON would make lists of them).

    >>> e = {"answer": "x", "metadata": {"output": ((1, 2),), "seen": {3}, "by_n": {4: "a"}}}
    >>> decode_entry(encode_entry(e)) == e
    True
    """
    return json.dumps(_tag(entry), allow_nan=False)


def decode_entry(text: str) -> dict:
    """The entry :func:`encode_entry` wrote; ``ValueError`` naming the column when it is not one."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        raise ValueError(f"reasoning_gym: column 'rg_entry' must be a JSON string, got {type(text).__name__}")
    try:
        entry = _untag(json.loads(text))
    except json.JSONDecodeError as e:
        raise ValueError(f"reasoning_gym: column 'rg_entry' is not valid JSON: {e}") from None
    if not isinstance(entry, dict) or "metadata" not in entry:
        raise ValueError("reasoning_gym: column 'rg_entry' must be an entry object with 'question', "
                         "'answer' and 'metadata'")
    return entry


# ------------------------------------------------------------------------------------------ guard
_BLOCKED_EVENTS = frozenset({
    "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty", "subprocess.Popen",
    "pty.spawn", "socket.connect", "socket.bind", "ctypes.dlopen", "os.remove", "os.rename", "os.rmdir",
    "os.mkdir", "os.chmod", "shutil.rmtree", "os.kill",
})  # fmt: skip
_guard_state = {"active": False, "installed": False, "blocked": []}


def _audit_hook(event: str, args: tuple) -> None:
    if not _guard_state["active"]:
        return
    bad = None
    if event in ("exec", "compile"):
        code = args[0]
        origin = code.co_filename if hasattr(code, "co_filename") else (args[1] if len(args) > 1 else "<?>")
        origin = os.fsdecode(origin) if isinstance(origin, (bytes, str)) else "<?>"
        if origin.startswith("<") or not os.path.isfile(origin):  # imports run code from real files
            bad = f"{event} of code from a string"
    elif event in _BLOCKED_EVENTS:
        bad = event
    elif event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        bad = f"open for writing ({args[0]!r})"
    if bad is not None:
        _guard_state["blocked"].append(bad)
        raise PermissionError(f"blocked by grpo-kit's reasoning_gym guard: {bad}")


@contextmanager
def _guard(name: str):
    """Block code execution from strings, processes and file writes while a scorer runs; raise
    afterwards if it tried any (its own ``except:`` must not turn the attempt into a score)."""
    if not _guard_state["installed"]:
        sys.addaudithook(_audit_hook)
        _guard_state["installed"] = True
    _guard_state["blocked"] = []
    _guard_state["active"] = True
    try:
        yield
    finally:
        _guard_state["active"] = False
    if _guard_state["blocked"]:
        raise PermissionError(f"reasoning_gym: the scorer of {name!r} tried {_guard_state['blocked'][0]}; "
                              "blocked, and the completion is not scored")


# ------------------------------------------------------------------------------------------ policy
def policy(name: str) -> str:
    """``"ours"``, ``"allowed"`` or ``"refused"`` for a dataset name (unknown or not audited: refused).

    >>> policy("leg_counting"), policy("countdown"), policy("intermediate_integration")
    ('allowed', 'ours', 'refused')
    """
    if name in OURS:
        return "ours"
    if name in ALLOWED or name in REVIEWED:
        return "allowed"
    return "refused"


def datasets() -> dict:
    """reasoning-gym's datasets by name; an ImportError saying how to install it when it is not."""
    try:
        from reasoning_gym.factory import DATASETS
    except ModuleNotFoundError:
        raise ImportError("reasoning-gym is not installed: pip install 'grpo-kit[gym]' "
                          "(or reasoning-gym>=0.1.25)") from None
    return DATASETS


def refusal(name: str) -> str:
    """Why a refused dataset is refused (a sentence naming it)."""
    DATASETS = datasets()

    if name not in DATASETS:
        raise ValueError(f"reasoning_gym: unknown reasoning-gym dataset {name!r} (column 'rg_dataset')")
    why = REFUSED.get(name, f"its scorer was not audited (audited: reasoning-gym {AUDITED_VERSION})")
    return f"reasoning-gym dataset {name!r} is refused: {why}"


@lru_cache(maxsize=None)
def _digest_error(name: str) -> str | None:
    """None when the installed scorer of ``name`` is the audited one, else why it is refused."""
    from rewards._rg_audit import audit

    DATASETS = datasets()

    pinned = ALLOWED.get(name) or REVIEWED[name][0]
    found = audit(DATASETS[name][0]).digest
    if found != pinned:
        import reasoning_gym

        return (f"reasoning-gym dataset {name!r}: its scorer in reasoning-gym {reasoning_gym.__version__} differs "
                f"from the one audited in {AUDITED_VERSION} (digest {found}, audited {pinned}); not run until "
                "re-audited (tests/test_reasoning_gym.py)")
    return None


@lru_cache(maxsize=64)
def _dataset(name: str, config_json: str):
    import reasoning_gym

    config = json.loads(config_json)
    config.pop("size", None)
    return reasoning_gym.create_dataset(name, **{"size": 1, "seed": 0, **config})


def _in_reward_worker() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name == "grpo_kit.workers"


def score_answer(name: str, answer: str | None, entry: dict, config: dict | None = None, *,
                 unsafe_scorer: bool = False) -> float:
    """The score of an extracted ``answer`` for a reasoning-gym ``entry`` of dataset ``name``
    under the dataset's policy (see the module docstring)."""
    kind = policy(name)
    if kind == "refused":
        reason = refusal(name)
        if not unsafe_scorer:
            raise RefusedScorer(f"{reason}; set `unsafe_scorer: true` on the reward (or the task's args) to run "
                                "it anyway (unsafe: model output is evaluated)")
        if not _in_reward_worker():
            raise RefusedScorer(f"{reason}; unsafe_scorer runs it only in a reward worker process "
                                "(scoring.workers >= 1), not in this one")
    if answer is None:
        return 0.0
    config = config or {}
    if kind == "ours":
        value = OURS[name](answer, entry, config)
    else:
        ds = _dataset(name, json.dumps(config, sort_keys=True))
        if kind == "refused":  # unsafe_scorer, in a worker
            value = ds.score_answer(answer, entry)
        else:
            error = _digest_error(name)
            if error:
                raise RefusedScorer(error)
            with _guard(name):
                value = ds.score_answer(answer, entry)
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"reasoning_gym: the scorer of {name!r} returned {value}")
    return value


@reward("reasoning_gym")
def reasoning_gym(completions: list, rg_dataset: list, rg_entry: list, rg_config: list | None = None, *,
                  dataset: str | None = None, unsafe_scorer: bool = False) -> list[float | None]:
    """reasoning-gym's verifier of each row's dataset, under the policy of the module docstring.

    ``dataset``: score only the rows of this dataset (None for the others), so that one labelled
    reward per dataset gives per-dataset metrics; ``unsafe_scorer``: run refused scorers (unsafe).
    """
    n = len(completions)
    if len(rg_dataset) != n or len(rg_entry) != n or (rg_config is not None and len(rg_config) != n):
        raise ValueError(f"reasoning_gym: got {n} completions but {len(rg_dataset)} 'rg_dataset' and "
                         f"{len(rg_entry)} 'rg_entry' values")
    configs = rg_config if rg_config is not None else [None] * n
    scores: list[float | None] = []
    for completion, name, entry_json, config_json in zip(completions, rg_dataset, rg_entry, configs):
        if not isinstance(name, str) or not name:
            raise ValueError(f"reasoning_gym: column 'rg_dataset' must hold a dataset name, got {name!r}")
        if dataset is not None and name != dataset:
            scores.append(None)
            continue
        entry = decode_entry(entry_json)
        try:
            config = json.loads(config_json) if config_json else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"reasoning_gym: column 'rg_config' is not valid JSON: {e}") from None
        answer = extract_equation(completion_text(completion))
        scores.append(score_answer(name, answer, entry, config, unsafe_scorer=unsafe_scorer))
    return scores
