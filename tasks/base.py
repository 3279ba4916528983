"""The :class:`Task` record and the helpers every task shares: reading a dataset source,
checking its columns, validating a built-in task's ``args`` and turning rows into prompts."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError

from grpo_kit.config import ConfigError, RewardConfig, format_validation_error
from grpo_kit.hub import load_hub_dataset
from tasks.templates import R1_SYSTEM_PROMPT, PromptStyle, default_template, prompt_opens_think

if TYPE_CHECKING:
    from datasets import Dataset

    from tasks.config import TaskConfig

A = TypeVar("A", bound=BaseModel)
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class Task:
    """A source of prompts with gold answers, and the rewards that score completions for them.

    ``load(split)`` returns a ``datasets.Dataset`` with a ``prompt`` column (a string for the
    ``"base"`` and ``"raw"`` styles, a list of ``{"role", "content"}`` messages for ``"chat"``),
    the gold answer as ``answer`` and every other column of the source rows (countdown's ``nums``
    and ``target``, which its reward reads).

    >>> from datasets import Dataset
    >>> t = Task("toy", lambda split: Dataset.from_list([{"question": "1+1=", "answer": "2"}]),
    ...          prompt_style="raw")
    >>> t.load("train")[0]
    {'question': '1+1=', 'answer': '2', 'prompt': '1+1='}
    """

    name: str
    build: Callable[[str], "Dataset"]
    """The unformatted rows of a split (``"train"`` or ``"test"``): the question and answer columns
    and any extra columns."""
    prompt_style: PromptStyle = "base"
    template: str | None = None
    """``str.format`` template over the row; ``{question}`` is the question column whatever its
    name. None: the style's default (:func:`tasks.templates.default_template`)."""
    system_prompt: str | None = None
    """Chat style only; None: :data:`tasks.templates.R1_SYSTEM_PROMPT`; ``""``: no system message."""
    question_column: str = "question"
    answer_column: str = "answer"
    """The column of the source rows holding the gold answer; ``load`` copies it to ``answer``."""
    default_rewards: list[RewardConfig] = field(default_factory=list)
    splits: tuple[str, ...] = ("train", "test")
    limit: int | None = None
    """Read at most this many rows of each split."""

    def __post_init__(self) -> None:
        if self.system_prompt is not None and self.prompt_style != "chat":
            raise ConfigError(f"task {self.name!r}: system_prompt only applies to prompt_style 'chat', "
                              f"not {self.prompt_style!r}")
        if self.template is None:
            self.template = default_template(self.prompt_style)
        if self.prompt_style == "chat" and self.system_prompt is None:
            self.system_prompt = R1_SYSTEM_PROMPT

    @property
    def prompt_opens_think(self) -> bool:
        """True when the prompt ends with ``<think>`` (format rewards need ``prompt_has_think_open``)."""
        return prompt_opens_think(self.prompt_style, self.template)

    def load(self, split: str) -> "Dataset":
        """The rows of ``split`` with ``prompt`` and ``answer`` columns (at most ``limit`` rows)."""
        if split not in self.splits:
            raise ConfigError(f"task {self.name!r} has no split {split!r}; its splits: {', '.join(self.splits)}")
        ds = self.build(split)
        if self.limit is not None and len(ds) > self.limit:
            ds = ds.select(range(self.limit))
        where = f"task {self.name!r}, split {split!r}"
        needed = {self.question_column: "question_column", self.answer_column: "answer_column"}
        for name in template_fields(self.template):
            if name != "question":
                needed.setdefault(name, "a placeholder of the template")
        check_columns(ds, needed, where)
        return ds.map(self._format_row, desc=None)

    def _format_row(self, row: dict[str, Any]) -> dict[str, Any]:
        text = self.template.format(**{**row, "question": row[self.question_column]})
        if self.prompt_style == "chat":
            system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            prompt: Any = system + [{"role": "user", "content": text}]
        else:
            prompt = text
        return {"prompt": prompt, "answer": row[self.answer_column]}


def template_fields(template: str) -> list[str]:
    """The column names a template reads, in order.

    >>> template_fields("Q: {question} ({level}) {{not a field}}")
    ['question', 'level']
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"template {template!r} is not a valid str.format template: {e} "
                          "(write a literal brace as {{ or }})") from None
    names = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        base = name.split(".")[0].split("[")[0]
        if not base or base.isdigit():
            raise ConfigError(f"template {template!r}: placeholders must name a column, like {{question}}; "
                              f"got {{{name}}}")
        names.append(base)
    return names


def check_columns(ds: "Dataset", needed: dict[str, str], where: str) -> None:
    """Raise :class:`ConfigError` naming the first column of ``needed`` (column -> why it is
    needed) that ``ds`` lacks, and the columns it has."""
    for column, why in needed.items():
        if column not in ds.column_names:
            raise ConfigError(f"{where}: the dataset has no column {column!r} ({why}); "
                              f"its columns: {', '.join(ds.column_names)}")


def parse_args(model: type[A], cfg: "TaskConfig") -> A:
    """Validate a built-in task's ``args`` against its settings model; errors name the key."""
    try:
        return model.model_validate(cfg.args)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, f"task {cfg.name!r} args")) from None


def is_local(source: str) -> bool:
    """True when ``source`` names a local file or folder rather than a hub id."""
    p = Path(source.replace("{split}", "train")).expanduser()
    return p.exists() or source.startswith((".", "/", "~")) or p.suffix in FILE_BUILDERS


def single_split(source: str) -> bool:
    """True when a local source holds one table, not named splits (a file without ``{split}``,
    or a folder saved from a ``Dataset``)."""
    p = Path(source).expanduser()
    if "{split}" in source or not is_local(source):
        return False
    return p.is_file() or (p / "state.json").is_file()


def load_source(source: str, config: str | None, split: str,
                setting: str = "task.dataset (task.args.dataset of a built-in task)") -> "Dataset":
    """Read split ``split`` of a hub dataset or a local file/folder (see :class:`TaskConfig`).

    A hub id that cannot be loaded (no network, or ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` set
    and not cached) raises a :class:`ConfigError` naming ``setting`` and how to point it at a local
    copy (:func:`grpo_kit.hub.load_hub_dataset`). A folder downloaded from the hub
    (``hf download ID --repo-type dataset --local-dir DIR``) is read with the same ``config``.
    """
    import datasets

    if not is_local(source):
        return load_hub_dataset(source, config, split, setting=setting)
    p = Path(source.replace("{split}", split)).expanduser()
    if not p.exists():
        raise ConfigError(f"dataset {str(p)!r} does not exist")
    if p.is_file():
        if p.suffix not in FILE_BUILDERS:
            raise ConfigError(f"dataset {str(p)!r}: unknown file type; expected one of {', '.join(FILE_BUILDERS)}")
        return datasets.load_dataset(FILE_BUILDERS[p.suffix], data_files=str(p), split="train")
    if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
        loaded = datasets.load_from_disk(str(p))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ConfigError(f"dataset {str(p)!r} has no split {split!r}; its splits: {', '.join(loaded)}")
            return loaded[split]
        return loaded
    # a folder of data files (one config, splits from the file names), or a copy of a hub repo
    # (its README's configs, e.g. gsm8k's main and socratic): ``config`` picks one where there are several
    configs = datasets.get_dataset_config_names(str(p))
    if len(configs) > 1 and config not in configs:
        raise ConfigError(f"dataset {str(p)!r} has configs {', '.join(configs)}; choose one with dataset_config "
                          f"(got {config!r})")
    try:
        return datasets.load_dataset(str(p), config if config in configs else None, split=split)
    except ValueError as e:  # datasets' own: no such split, no data files
        raise ConfigError(f"dataset {str(p)!r}: {e}") from None


def split_names(source: str, train_split: str, test_split: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """The task's splits and the source split each reads: a single-table source has only ``train``.

    >>> split_names("openai/gsm8k", "train", "test")
    (('train', 'test'), {'train': 'train', 'test': 'test'})
    """
    splits = ("train",) if single_split(source) else ("train", "test")
    return splits, {"train": train_split, "test": test_split}


def r1_rewards(task: Task) -> list[RewardConfig]:
    """Default rewards of a math task: ``math_accuracy`` 1.0, plus ``think_format`` 0.5 when the
    prompt asks for ``<think>`` (with ``prompt_has_think_open`` set when the prompt opens it)."""
    rewards = [RewardConfig(name="math_accuracy", weight=1.0)]
    if "<think>" in task.template + (task.system_prompt or ""):
        rewards.append(RewardConfig(name="think_format", weight=0.5,
                                    args={"prompt_has_think_open": task.prompt_opens_think}))
    return rewards
