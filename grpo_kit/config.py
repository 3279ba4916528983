"""Settings as pydantic models, loaded from YAML, validated once at load.

Unknown keys are rejected with the list of valid ones (and a "did you mean" when one is close);
every error names the key path and says how to fix it::

    >>> load_config_text("workers: 2\\ntimout: 3\\n", ScoringConfig)
    Traceback (most recent call last):
    ...
    grpo_kit.errors.ConfigError: <string>: timout: unknown key; did you mean 'timeout'? valid keys: workers, timeout, on_error
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grpo_kit.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base model: unknown keys are errors, NaN/inf are refused, defaults are validated."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


Scope = Literal["item", "group", "batch"]
"""How the scorer calls a reward: one completion per call (``item``), once per prompt group
(``group``), or once on the whole batch in the main process (``batch``); see :mod:`grpo_kit.contract`."""

OnError = Literal["exclude", "zero", "fail"]


class RewardConfig(Strict):
    """One reward in a weighted combination."""

    name: str = Field(description="registry name (see `grpo-kit score --list-rewards`), "
                      "path/to/file.py:function or package.module:function")
    weight: float = Field(1.0, description="weight in the combined reward (a weighted sum)")
    args: dict[str, Any] = Field(default_factory=dict,
                                 description="the reward's settings (its keyword-only parameters)")
    label: str | None = Field(None, description="name in outputs and metrics (default: name)")
    scope: Scope | None = Field(None, description="how the scorer calls it: item (one completion per "
                                "call), group (once per prompt group) or batch (once per batch, in the "
                                "main process); default: the scope the function declares, item for a "
                                "plain function. A TRL reward that compares completions needs group or batch")

    @property
    def key(self) -> str:
        return self.label or self.name

    @classmethod
    def parse_cli(cls, text: str) -> "RewardConfig":
        """Parse ``NAME[=WEIGHT]`` from the command line.

        >>> RewardConfig.parse_cli("math_accuracy=2").weight
        2.0
        >>> RewardConfig.parse_cli("rewards.py:my_fn").name
        'rewards.py:my_fn'
        """
        name, sep, weight = text.rpartition("=") if "=" in text else (text, "", "")
        if not sep:
            return cls(name=text)
        try:
            w = float(weight)
        except ValueError:
            raise ConfigError(f"--reward {text!r}: the weight after '=' must be a number, got {weight!r}")
        return cls(name=name, weight=w)


def unique_reward_keys(rewards: list[RewardConfig] | None) -> list[RewardConfig] | None:
    """A field validator's body: two rewards may not share a key (their outputs would collide)."""
    seen: set[str] = set()
    for r in rewards or []:
        if r.key in seen:
            raise ValueError(f"reward {r.key!r} appears twice; give one of them a distinct `label`")
        seen.add(r.key)
    return rewards


class ScoringConfig(Strict):
    """How rewards are executed, and what a failed reward does to the combined reward."""

    workers: int = Field(2, ge=0, description="worker processes; 0 runs rewards in-process "
                         "with no timeout (debugging only)")
    timeout: float = Field(5.0, gt=0, description="hard per-item time limit in seconds; a stuck "
                           "worker is killed and replaced, the item recorded as a timeout")
    on_error: OnError = Field(
        "exclude", description="a reward that raised, timed out or returned a bad value (a failure, "
        "not 'does not apply'): exclude = the completion gets no combined reward (null) and, in "
        "training, no gradient; zero = the failed reward counts as 0 in the weighted sum; fail = stop "
        "with the reason. Every failure is counted either way")


def _fmt_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<top level>"


def _models_in(ann: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a type annotation (through Optional, Union, list, Annotated)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in getattr(ann, "__args__", ()) or () for m in _models_in(a)]


def _tag_of(model: type[BaseModel]) -> Any:
    f = model.model_fields.get("type")
    args = getattr(f.annotation, "__args__", ()) if f is not None else ()
    return args[0] if len(args) == 1 else None


def _walk(model: type[BaseModel], loc: tuple) -> tuple[type[BaseModel] | None, tuple]:
    """Walk a model class along an error location to the model owning the last key; also return
    the location without the tags pydantic adds for discriminated unions."""
    cur: Any = model
    shown: list = []
    parts = list(loc[:-1])
    i = 0
    while i < len(parts):
        part = parts[i]
        shown.append(part)
        i += 1
        if isinstance(part, int) or cur is None:
            continue
        if part not in cur.model_fields:
            return None, tuple(shown) + tuple(parts[i:]) + loc[-1:]
        cands = _models_in(cur.model_fields[part].annotation)
        if cands and i < len(parts) and parts[i] not in cands[0].model_fields:
            tagged = [c for c in cands if _tag_of(c) == parts[i]]  # a discriminated union's tag
            if tagged:
                cands, i = tagged, i + 1
        cur = cands[0] if cands else None
    return cur, tuple(shown) + loc[-1:]


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = []
    for e in err.errors():
        owner, loc = _walk(model, tuple(e["loc"]))
        where = f"{source}: {_fmt_loc(loc)}"
        if e["type"] == "extra_forbidden":
            valid = list(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(f"{where}: unknown key; {hint}valid keys: {', '.join(valid)}")
        elif e["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        else:
            got = e.get("input")
            got_s = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
            lines.append(f"{where}: {e['msg']}{got_s}")
    return "\n".join(lines)


def build_config(data: Any, model: type[M], source: str = "<config>") -> M:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, source)) from None


def load_config_text(text: str, model: type[M], source: str = "<string>") -> M:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    return build_config(data, model, source)


def read_yaml(path: str | Path) -> Any:
    """The parsed contents of a YAML config file, or a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None


def load_config(path: str | Path, model: type[M], overrides: list[str] | None = None) -> M:
    """Load a YAML file into ``model``, applying ``key.sub=value`` overrides (YAML-typed values)."""
    data = read_yaml(path)
    for ov in overrides or []:
        apply_override(data, ov)
    return build_config(data, model, str(path))


def apply_override(data: dict, override: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (``3`` is an int).

    >>> d = {"scoring": {"workers": 2}}; apply_override(d, "scoring.timeout=1.5"); d
    {'scoring': {'workers': 2, 'timeout': 1.5}}
    """
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected key=value, e.g. scoring.timeout=2")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    cur = data
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = cur.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {override!r}: {part} is not a mapping")
        cur = nxt
    cur[parts[-1]] = value


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (written into each run folder)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

