"""Hugging Face Hub access for timm checkpoints, with errors that say what to do.

Files come from `huggingface_hub.hf_hub_download`, so HF_HUB_OFFLINE, HF_HUB_CACHE, HF_TOKEN and
the local cache behave as everywhere else in the HF ecosystem. One exception: huggingface_hub retries
a refused connection for about a minute, so the endpoint is probed first (one TCP connect, a 1.5 s
timeout) and an unreachable Hub is treated like HF_HUB_OFFLINE (cached files still load).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path

HUB_PREFIXES = ("hf-hub:", "hf_hub:")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class HubError(OSError):
    """A file could not be obtained from the Hub (missing repo / revision / file, offline, no cache)."""


class NotCachedError(HubError):
    """A file is not in the local cache and the Hub is offline or unreachable.

    `str(error)` advises Python users (`checkpoint=`); `cli_message` the command line (`--checkpoint`).
    """

    def __init__(self, message: str, cli_message: str):
        super().__init__(message)
        self.cli_message = cli_message


class _NoSuchFile(HubError):
    pass


@dataclasses.dataclass(frozen=True)
class HubRef:
    """An HF repo (and optional revision) named by 'hf-hub:org/repo[@rev]' or 'timm/<name>[@rev]'."""

    repo_id: str
    revision: str | None = None


def parse_hub_name(name: str) -> HubRef | None:
    """HubRef for 'hf-hub:org/repo[@rev]' / 'timm/<name>[@rev]'; None for a plain timm model name."""
    for prefix in HUB_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    else:
        if not name.startswith("timm/"):
            return None
    repo, _, revision = name.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"expected an HF repo id 'org/name' in {name!r}")
    return HubRef(repo, revision or None)


def _where(ref: HubRef) -> str:
    return f"HF repo {ref.repo_id}" + (f" @ {ref.revision}" if ref.revision else "")


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether a TCP connection to the HF endpoint (or the proxy configured for it) opens within `timeout` s."""
    from huggingface_hub import constants

    url = urllib.parse.urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_cached(ref: HubRef, what: str, cache_dir: str | os.PathLike | None) -> NotCachedError:
    from huggingface_hub import constants

    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub ({constants.ENDPOINT}) cannot be reached"
    head = f"{what} of {_where(ref)} is not in the local cache ({cache_dir or constants.HF_HUB_CACHE}) and {why}."
    fetch_once = f" Download it once with network access (`hf download {ref.repo_id}`), point"
    return NotCachedError(
        f"{head}{fetch_once} cache_dir= or HF_HUB_CACHE at a cache that holds it, or pass checkpoint=<local file>.",
        f"{head}{fetch_once} HF_HUB_CACHE at a cache that holds it, or pass --checkpoint FILE.",
    )


def cli_message(error: BaseException) -> str:
    """The message of `error` for command-line users (options, not Python arguments)."""
    return error.cli_message if isinstance(error, NotCachedError) else str(error)


def fetch(
    ref: HubRef, filename: str, cache_dir: str | os.PathLike | None = None, *, online: bool | None = None
) -> Path:
    """Local path of `filename` in the repo (downloaded or from the cache); HubError otherwise.

    online: whether to ask the Hub (default: unless HF_HUB_OFFLINE is set or `hub_reachable()` fails);
      offline, only the cache is read.
    """
    try:
        from huggingface_hub import constants, errors, hf_hub_download
    except ImportError as e:
        raise ImportError("loading from the Hub needs huggingface_hub (pip install huggingface_hub)") from e
    where = _where(ref)
    if online is None:
        online = not constants.HF_HUB_OFFLINE and hub_reachable()
    try:
        path = hf_hub_download(
            ref.repo_id, filename, revision=ref.revision, cache_dir=cache_dir, local_files_only=not online
        )
        return Path(path)
    except errors.GatedRepoError as e:
        raise HubError(f"{where} is gated: accept its terms on huggingface.co and log in (`hf auth login`)") from e
    except errors.RepositoryNotFoundError as e:
        raise HubError(
            f"{where} does not exist (or is private): check the model name;"
            " libra_jax.weights.registry.list_pretrained() lists the known timm tags"
        ) from e
    except errors.RevisionNotFoundError as e:
        raise HubError(f"{where}: revision {ref.revision!r} not found") from e
    except errors.LocalEntryNotFoundError as e:
        raise _not_cached(ref, filename, cache_dir) from e
    except errors.EntryNotFoundError as e:
        raise _NoSuchFile(f"{where} has no file {filename}") from e
    except (errors.HfHubHTTPError, OSError) as e:
        raise HubError(f"downloading {filename} from {where} failed: {e}") from e


def fetch_config(
    ref: HubRef,
    cache_dir: str | os.PathLike | None = None,
    *,
    required: bool = True,
    filename: str = "config.json",
) -> dict | None:
    """The repo's JSON config `filename` (timm's `config.json` by default) as a dict; None when absent / not
    cached and not `required`."""
    try:
        path = fetch(ref, filename, cache_dir)
    except (NotCachedError, _NoSuchFile):
        if required:
            raise
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise HubError(f"{filename} of HF repo {ref.repo_id} is not valid JSON ({path}): {e}") from e


def fetch_weights(
    ref: HubRef, cache_dir: str | os.PathLike | None = None, filenames: tuple[str, ...] = WEIGHT_FILES
) -> Path:
    """The repo's first weights file of `filenames` (default `model.safetensors`, then `pytorch_model.bin`)."""
    from huggingface_hub import constants

    online = not constants.HF_HUB_OFFLINE and hub_reachable()  # one probe for all the file names
    failures: list[HubError] = []
    for filename in filenames:
        try:
            return fetch(ref, filename, cache_dir, online=online)
        except (NotCachedError, _NoSuchFile) as e:
            failures.append(e)
    if any(isinstance(e, NotCachedError) for e in failures):
        raise _not_cached(ref, " / ".join(filenames), cache_dir) from failures[0]
    raise HubError(f"{_where(ref)} has no weights file ({' or '.join(filenames)})") from failures[-1]


def parse_timm_config(cfg: dict) -> tuple[str, dict, dict]:
    """(architecture, pretrained_cfg, model_args) of a timm HF `config.json` (timm's `_parse_model_cfg`)."""
    cfg = dict(cfg)
    if "pretrained_cfg" in cfg:
        pretrained_cfg = dict(cfg["pretrained_cfg"])
        arch = cfg.get("architecture")
    else:  # legacy single-dict layout
        pretrained_cfg = cfg
        arch = pretrained_cfg.pop("architecture", None)
    if not arch:
        raise ValueError("config.json names no 'architecture'; is this a timm model repo?")
    if "num_classes" in cfg:
        pretrained_cfg["num_classes"] = cfg["num_classes"]
    if cfg.get("global_pool") is not None:
        pretrained_cfg.setdefault("global_pool", cfg["global_pool"])
    return arch, pretrained_cfg, dict(cfg.get("model_args") or {})


def repo_ref(name: str) -> HubRef | None:
    """The HF repo a name refers to: 'hf-hub:org/repo[@rev]', 'org/repo[@rev]' or a bare repo like
    'bert-base-uncased'; None for an existing local path."""
    if os.path.exists(name):
        return None
    ref = parse_hub_name(name)
    if ref is not None:
        return ref
    repo, _, revision = name.partition("@")
    if not repo or repo.count("/") > 1 or name.endswith((".safetensors", ".bin", ".json")):
        raise ValueError(f"{name!r} is neither an existing file or folder nor an HF repo id ('org/name')")
    return HubRef(repo, revision or None)


def repo_file(
    ref: HubRef | None, folder: str, filename: str, cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """`filename` of a checkpoint: from the local `folder` when `ref` is None, else from the hub repo `ref`
    (downloaded or cached); None where it has no such file."""
    if ref is None:
        path = Path(folder) / filename
        return path if path.is_file() else None
    try:
        return fetch(ref, filename, cache_dir)
    except HubError:
        return None
