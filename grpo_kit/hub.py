"""Loading models and datasets that may live on the Hugging Face Hub, with errors a user can act on.

On a machine without network (many cluster nodes) a hub id the local cache does not hold cannot
be loaded. Without ``HF_HUB_OFFLINE`` the libraries first retry for about 25 s per file; with
``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1`` for datasets) nothing is asked of the network
and the load fails at once. Either way the caller gets one :class:`ConfigError` whose message names
the setting, the hub id, what failed and how to point at a local copy (the reason, elided here,
depends on the error and on the environment)::

    >>> print(hub_error("model.path", "org/model", OSError("no route"), repo_type="model"))  # doctest: +ELLIPSIS
    model.path 'org/model' is not a local path and cannot be loaded from the Hugging Face Hub: ... Fix: point model.path at a local copy (a folder with config.json and the weights), made on a machine with network by `hf download org/model --local-dir DIR` ...

Every loader of the project goes through this module: the policy, tokenizer and value backbone
(:func:`load_pretrained`), the training and evaluation tasks and ``grpo-kit score``'s input
(:func:`load_hub_dataset`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, TypeVar

from grpo_kit.errors import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

T = TypeVar("T")
RepoType = Literal["model", "dataset"]
_TRUE = ("1", "on", "yes", "true")
LOCAL_FORMS = {
    "model": "a folder with config.json and the weights",
    "dataset": "a .jsonl/.json/.parquet/.csv file, a folder of them, or a save_to_disk folder",
}


def offline(repo_type: RepoType = "model") -> bool:
    """True when the environment forbids network access to the hub: ``HF_HUB_OFFLINE`` (or
    transformers' ``TRANSFORMERS_OFFLINE``), and for datasets also ``HF_DATASETS_OFFLINE``."""
    names = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"] + (["HF_DATASETS_OFFLINE"] if repo_type == "dataset" else [])
    return any(os.environ.get(n, "").strip().lower() in _TRUE for n in names)


def looks_local(path: str) -> bool:
    """True when ``path`` exists or is written as a path (``./``, ``/``, ``~``), so that it is
    never a hub id.

    >>> looks_local("openai/gsm8k"), looks_local("./runs/ckpt"), looks_local("~/models/qwen")
    (False, True, True)
    """
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists()


def _reason(err: BaseException | None, repo_type: RepoType) -> str:
    """What went wrong, read from the library's exception and the errors it was raised from."""
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    chain, e = [], err
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    names = {type(c).__name__ for c in chain}
    if err is None or offline(repo_type) or any(isinstance(c, OfflineModeIsEnabled) for c in chain):
        flag = "HF_HUB_OFFLINE" if repo_type == "model" else "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE"
        return f"{flag} is set (no network) and the local cache does not hold it"
    if any(isinstance(c, GatedRepoError) for c in chain):
        return "it is a gated repository: accept its terms on the hub and log in with `hf auth login`"
    if any(isinstance(c, RepositoryNotFoundError) for c in chain) or "DatasetNotFoundError" in names:
        return f"the hub has no such {repo_type} (or it is private: log in with `hf auth login`)"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if len(first) > 200:
        first = first[:200] + "..."
    if isinstance(err, ConnectionError) or "LocalEntryNotFoundError" in names or "couldn't connect" in first.lower():
        return "the hub could not be reached and the local cache does not hold it"
    return f"{type(err).__name__}: {first}"


def hub_error(label: str, hub_id: str, err: BaseException | None, *, repo_type: RepoType,
              setting: str | None = None) -> ConfigError:
    """The :class:`ConfigError` for a hub id that could not be loaded (``err`` None: offline and not
    in the cache): one line naming ``label`` and the id, the reason, and the fix: pointing
    ``setting`` (default ``label``) at a local copy."""
    download = f"hf download {hub_id}" + (" --repo-type dataset" if repo_type == "dataset" else "")
    fix = (f"Fix: point {setting or label} at a local copy ({LOCAL_FORMS[repo_type]}), made on a machine "
           f"with network by `{download} --local-dir DIR` (older huggingface_hub: `huggingface-cli download`)")
    if offline(repo_type):
        fix += ", or copy in the HF_HOME folder of a machine that loaded it"
    else:
        fix += "; set HF_HUB_OFFLINE=1 (and HF_DATASETS_OFFLINE=1) to fail at once instead of retrying"
    return ConfigError(f"{label} {hub_id!r} is not a local path and cannot be loaded from the Hugging Face "
                       f"Hub: {_reason(err, repo_type)}. {fix}")


def load_pretrained(load: Callable[[str], T], path: str, *, setting: str, what: str = "a model") -> T:
    """``load(path)`` (a ``from_pretrained``), with a :class:`ConfigError` naming ``setting`` when
    it fails: a local folder that is missing or unreadable, or a hub id that cannot be loaded.

    A hub id is checked first by fetching its ``config.json`` (which ``from_pretrained`` reads
    anyway): offline and not cached, that fails at once; unreachable, it fails after one round of
    the hub's retries instead of one per file.
    """
    if looks_local(path):
        if not Path(path).expanduser().exists():
            raise ConfigError(f"{setting} {path!r}: no such folder")
        try:
            return load(path)
        except OSError as e:
            raise ConfigError(f"{setting} {path!r}: cannot load {what} from it: {e}") from None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError, RemoteEntryNotFoundError

    try:
        hf_hub_download(path, "config.json")
    except HFValidationError as e:
        raise ConfigError(f"{setting} {path!r}: no such local folder, and not a hub id (org/name): {e}") from None
    except RemoteEntryNotFoundError:
        pass  # the hub has the repo but no config.json there: from_pretrained says what it needs
    except OSError as e:  # offline and not cached (LocalEntryNotFoundError), unreachable, no such repo
        raise hub_error(setting, path, e, repo_type="model") from None
    try:
        return load(path)
    except OSError as e:
        raise hub_error(setting, path, e, repo_type="model") from None


def load_hub_dataset(hub_id: str, config: str | None, split: str | None, *, setting: str,
                     label: str = "dataset") -> "Dataset | DatasetDict":
    """``datasets.load_dataset(hub_id, config, split=split)``, with a :class:`ConfigError` naming
    ``label`` and ``setting`` (see :func:`hub_error`) when it fails. Offline and not in the datasets
    cache, it fails at once."""
    import datasets

    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except OSError as e:  # ConnectionError, DatasetNotFoundError, the hub's HTTP errors
        raise hub_error(label, hub_id, e, repo_type="dataset", setting=setting) from None
    except ValueError as e:  # datasets' own: an unknown config or split
        raise ConfigError(f"{label} {hub_id!r}: {e}") from None
