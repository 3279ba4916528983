"""The one record passed between the stages of the loop: sample -> score -> batch tensors.

A :class:`RolloutBatch` is columnar: B prompt groups, N completions, each field one list. The
sampler creates it, the scorer fills its reward fields in place, the batch builder turns it into
tensors once; eval, the Python script and ``grpo-kit score`` use the same record. It holds only
plain Python values (lists of ints, floats, strings and the data's own column values), so it
pickles and JSON-serialises cheaply; :meth:`RolloutBatch.to_dict` / :meth:`RolloutBatch.from_dict`
are the wire format for processes that exchange rollouts. ``policy_version`` says which weights
sampled it (the number of optimizer steps the policy had taken).

>>> rb = RolloutBatch.from_groups(prompts=["1+1=", "2+2="], prompt_ids=[[1, 2], [3, 4]],
...                               completions=[["2", "3"], ["4", "5"]],
...                               group_columns={"answer": ["2", "4"]})
>>> rb.size, rb.num_groups, rb.column("answer"), rb.column("prompt")[1]
(4, 2, ['2', '2', '4', '4'], '1+1=')
>>> RolloutBatch.from_dict(rb.to_dict()) == rb
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

ALIASES = {"prompts": "prompt"}
"""Column names a reward may use for another: TRL passes ``prompts=``."""


@dataclass
class RolloutBatch:
    """B prompt groups and their N completions; completion ``i`` belongs to group ``group_index[i]``.

    Per group (length B): ``prompts`` (the dataset's prompt: a string or chat messages),
    ``prompt_ids`` (may be empty lists offline), ``group_columns`` (the row's other columns).
    Per completion (length N): ``completions`` (texts, or chat messages offline), ``completion_ids``,
    ``finish_reasons`` (``"stop"`` or ``"length"``), ``sampler_logprobs`` (the sampler's log-probs of
    its tokens), ``item_columns`` (columns that differ within a group, as in a scored file). The
    sampler-only fields are None where no sampler ran (``grpo-kit score``).

    Filled by the scorer (per completion): ``rewards`` (per reward key), ``reward_errors``
    (``"timeout: ..."`` / ``"error: ..."`` where a reward failed) and ``reward``, the combined
    reward (None: no reward applies, or a failed reward under ``scoring.on_error: exclude``).
    Advantages are never stored here: the trainer computes them from ``reward``.

    Multi-turn rollouts (tools, :mod:`grpo_kit.rollout.multiturn`) fill two more fields per
    completion: ``completion_masks`` (one entry per completion token: 1 where the model sampled it,
    0 where a tool inserted it; ``sampler_logprobs`` is 0.0 on inserted tokens) and ``turns`` (one
    dict per sampled turn: ``start``/``end``, its sampled tokens; ``sample_s``; and when the turn
    ended in a tool call ``tool``, ``call``, ``status`` (``ok``, ``error``, ``timeout``, ``killed``,
    ``not_run``), ``output``, ``tool_s`` and ``inserted`` (the ``[start, end)`` of its output's
    tokens)). ``None``: one turn, every token sampled. Rewards see the calls as the column
    ``tool_calls``.
    """

    prompts: list[Any]
    prompt_ids: list[list[int]]
    group_index: list[int]
    completions: list[Any]
    completion_ids: list[list[int]] | None = None
    finish_reasons: list[str] | None = None
    sampler_logprobs: list[list[float]] | None = None
    group_columns: dict[str, list] = field(default_factory=dict)
    item_columns: dict[str, list] = field(default_factory=dict)
    policy_version: int = 0
    rewards: dict[str, list[float | None]] = field(default_factory=dict)
    reward_errors: dict[str, list[str | None]] = field(default_factory=dict)
    reward: list[float | None] = field(default_factory=list)
    ref_logprobs: list[list[float]] | None = None  # the reference model's, when the rollout process computes them
    completion_masks: list[list[int]] | None = None  # multi-turn: 1 sampled, 0 inserted by a tool
    turns: list[list[dict[str, Any]]] | None = None  # multi-turn: each completion's turns (see below)

    def __post_init__(self) -> None:
        B, N = len(self.prompts), len(self.completions)
        if len(self.prompt_ids) != B:
            raise ValueError(f"{len(self.prompt_ids)} prompt_ids for {B} prompts")
        if len(self.group_index) != N:
            raise ValueError(f"{len(self.group_index)} group indices for {N} completions")
        if any(not 0 <= g < B for g in self.group_index):
            raise ValueError(f"a group index is outside 0..{B - 1}")
        for name in ("completion_ids", "finish_reasons", "sampler_logprobs", "ref_logprobs", "completion_masks",
                     "turns"):
            v = getattr(self, name)
            if v is not None and len(v) != N:
                raise ValueError(f"{name} has {len(v)} entries for {N} completions")
        for kind, cols, n in (("group", self.group_columns, B), ("item", self.item_columns, N)):
            for k, v in cols.items():
                if len(v) != n:
                    raise ValueError(f"{kind} column {k!r} has {len(v)} values for {n} "
                                     f"{'prompts' if kind == 'group' else 'completions'}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_groups(cls, *, prompts: list[Any], prompt_ids: list[list[int]], completions: list[list[Any]],
                    completion_ids: list[list[list[int]]] | None = None,
                    finish_reasons: list[list[str]] | None = None,
                    sampler_logprobs: list[list[list[float]]] | None = None,
                    group_columns: dict[str, list] | None = None, policy_version: int = 0,
                    completion_masks: list[list[list[int]]] | None = None,
                    turns: list[list[list[dict[str, Any]]]] | None = None) -> "RolloutBatch":
        """A record from per-group lists (``completions[b]`` are group b's G_b completions)."""
        flat = lambda x: None if x is None else [c for grp in x for c in grp]  # noqa: E731
        return cls(prompts=list(prompts), prompt_ids=[list(p) for p in prompt_ids],
                   group_index=[b for b, grp in enumerate(completions) for _ in grp],
                   completions=flat(completions), completion_ids=flat(completion_ids),
                   finish_reasons=flat(finish_reasons), sampler_logprobs=flat(sampler_logprobs),
                   group_columns={k: list(v) for k, v in (group_columns or {}).items()},
                   policy_version=policy_version, completion_masks=flat(completion_masks), turns=flat(turns))

    def with_prompts(self, prompts: list[Any], group_columns: dict[str, list] | None = None,
                     policy_version: int | None = None) -> "RolloutBatch":
        """The same completions, attributed to the dataset's prompts and their columns (a sampler
        sees only token ids). As in TRL, the completions of a chat prompt (a list of messages) are
        chat completions, ``[{"role": "assistant", "content": text}]``; of a text prompt, texts."""
        completions = [[{"role": "assistant", "content": c}] if isinstance(prompts[g], list) and isinstance(c, str)
                       else c for c, g in zip(self.completions, self.group_index)]
        return _replace(self, prompts=list(prompts), completions=completions,
                        group_columns=dict(group_columns or {}),
                        policy_version=self.policy_version if policy_version is None else policy_version)

    # ------------------------------------------------------------------ shape
    @property
    def size(self) -> int:
        """N, the number of completions."""
        return len(self.completions)

    @property
    def num_groups(self) -> int:
        """B, the number of prompt groups."""
        return len(self.prompts)

    def groups(self) -> list[list[int]]:
        """The completion indices of each group, in group order."""
        out: list[list[int]] = [[] for _ in range(self.num_groups)]
        for i, g in enumerate(self.group_index):
            out[g].append(i)
        return out

    @property
    def truncated(self) -> list[bool]:
        """[N] cut at the length limit (finish reason ``"length"``)."""
        return [r == "length" for r in (self.finish_reasons or ["stop"] * self.size)]

    # ------------------------------------------------------------------ columns
    def column_names(self) -> set[str]:
        """Every column a reward can ask for."""
        names = {*self.group_columns, *self.item_columns}
        if "prompt" in names or any(p is not None for p in self.prompts):
            names |= {"prompt", *ALIASES}
        if self.completion_ids is not None:
            names.add("completion_ids")
        if self.turns is not None:
            names.add("tool_calls")
        return names

    def column(self, name: str) -> list:
        """Column ``name`` with one value per completion (group columns repeated over the group).

        ``prompt`` (and ``prompts``) is the group's prompt; ``completion_ids`` the sampled tokens;
        ``tool_calls`` (multi-turn) each completion's calls, in order: dicts with ``tool``, ``call``,
        ``status`` and ``output`` (see :func:`tool_calls`)."""
        name = ALIASES.get(name, name)
        if name in self.item_columns:
            return self.item_columns[name]
        if name == "completion_ids" and self.completion_ids is not None:
            return self.completion_ids
        if name == "tool_calls" and self.turns is not None:
            return [tool_calls(t) for t in self.turns]
        per_group = self.prompts if name == "prompt" else self.group_columns.get(name)
        if per_group is None:
            raise KeyError(f"the batch has no column {name!r}; its columns: {', '.join(sorted(self.column_names()))}")
        return [per_group[g] for g in self.group_index]

    # ------------------------------------------------------------------ selection
    def select_groups(self, keep: Sequence[int]) -> "RolloutBatch":
        """The groups ``keep`` (in that order) with their completions and scores."""
        members = self.groups()
        items = [i for b in keep for i in members[b]]
        renum = [new for new, b in enumerate(keep) for _ in members[b]]
        pick = lambda xs: None if xs is None else [xs[i] for i in items]  # noqa: E731
        return RolloutBatch(
            prompts=[self.prompts[b] for b in keep], prompt_ids=[self.prompt_ids[b] for b in keep],
            group_index=renum, completions=pick(self.completions), completion_ids=pick(self.completion_ids),
            finish_reasons=pick(self.finish_reasons), sampler_logprobs=pick(self.sampler_logprobs),
            group_columns={k: [v[b] for b in keep] for k, v in self.group_columns.items()},
            item_columns={k: pick(v) for k, v in self.item_columns.items()},
            policy_version=self.policy_version,
            rewards={k: pick(v) for k, v in self.rewards.items()},
            reward_errors={k: pick(v) for k, v in self.reward_errors.items()},
            reward=pick(self.reward) if self.reward else [], ref_logprobs=pick(self.ref_logprobs),
            completion_masks=pick(self.completion_masks), turns=pick(self.turns))

    @classmethod
    def concat(cls, parts: Sequence["RolloutBatch"]) -> "RolloutBatch":
        """The groups of every part, in order (the parts must have the same fields filled)."""
        if not parts:
            raise ValueError("concat of no rollout batches")
        if len(parts) == 1:
            return parts[0]
        offs, off = [], 0
        for p in parts:
            offs.append(off)
            off += p.num_groups

        def cat(name: str):
            vals = [getattr(p, name) for p in parts]
            if any(v is None for v in vals):
                if not all(v is None for v in vals):
                    raise ValueError(f"concat: {name} is set in some parts only")
                return None
            return [x for v in vals for x in v]

        def cat_dict(name: str) -> dict[str, list]:
            keys = [set(getattr(p, name)) for p in parts]
            if any(k != keys[0] for k in keys):
                raise ValueError(f"concat: the parts have different {name}")
            return {k: [x for p in parts for x in getattr(p, name)[k]] for k in getattr(parts[0], name)}

        return cls(prompts=cat("prompts"), prompt_ids=cat("prompt_ids"),
                   group_index=[g + o for p, o in zip(parts, offs) for g in p.group_index],
                   completions=cat("completions"), completion_ids=cat("completion_ids"),
                   finish_reasons=cat("finish_reasons"), sampler_logprobs=cat("sampler_logprobs"),
                   group_columns=cat_dict("group_columns"), item_columns=cat_dict("item_columns"),
                   policy_version=min(p.policy_version for p in parts),
                   rewards=cat_dict("rewards"), reward_errors=cat_dict("reward_errors"),
                   reward=cat("reward"), ref_logprobs=cat("ref_logprobs"),
                   completion_masks=cat("completion_masks"), turns=cat("turns"))

    # ------------------------------------------------------------------ output
    def score_fields(self, i: int) -> dict[str, Any]:
        """The output fields of completion ``i``: ``rewards``, ``reward`` and (if any) ``reward_errors``."""
        out: dict[str, Any] = {"rewards": {k: v[i] for k, v in self.rewards.items()},
                               "reward": self.reward[i] if self.reward else None}
        errs = {k: v[i] for k, v in self.reward_errors.items() if v[i] is not None}
        if errs:
            out["reward_errors"] = errs
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and dicts (JSON- and pickle-friendly); :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RolloutBatch":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"not rollout-batch fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def tool_calls(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tool calls of one completion's turns, as rewards see them (the ``tool_calls`` column).

    >>> tool_calls([{"start": 0, "end": 5, "tool": "calculator", "call": "2*3", "status": "ok",
    ...              "output": "6", "tool_s": 0.0, "inserted": [5, 8]}, {"start": 8, "end": 9}])
    [{'tool': 'calculator', 'call': '2*3', 'status': 'ok', 'output': '6'}]
    """
    return [{k: t[k] for k in ("tool", "call", "status", "output")} for t in turns if "status" in t]


def _deprecated(old: str, new: str):
    """A read-only alias kept for one version: ``Scorer.score`` returned a ``ScoreResult`` with
    ``scores``, ``errors``, ``combined`` and ``row(i)``; it returns the record now."""
    import warnings

    def get(self):
        warnings.warn(f"RolloutBatch.{old} is deprecated; use .{new}", DeprecationWarning, stacklevel=2)
        return getattr(self, new)

    return property(get)


RolloutBatch.scores = _deprecated("scores", "rewards")  # type: ignore[attr-defined]
RolloutBatch.errors = _deprecated("errors", "reward_errors")  # type: ignore[attr-defined]
RolloutBatch.combined = _deprecated("combined", "reward")  # type: ignore[attr-defined]
RolloutBatch.row = _deprecated("row", "score_fields")  # type: ignore[attr-defined]


def _replace(rb: RolloutBatch, **changes: Any) -> RolloutBatch:
    return RolloutBatch(**{**{f.name: getattr(rb, f.name) for f in fields(rb)}, **changes})
