"""Find a model's files: a local folder, or a Hugging Face repo (local cache first, fail fast offline)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelUnavailableError(OSError):
    """The model is neither a local folder nor reachable in the Hugging Face cache or Hub."""


def _hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the Hub endpoint accepts a TCP connection, else the reason it does not."""
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot connect to {url.hostname}: {exc.strerror or exc}"
    return None


def resolve_folder(uri: str | Path, allow_patterns: list[str] | None = None, base: Path | None = None) -> Path:
    """Return a local folder holding the model at ``uri``.

    ``uri`` is a folder (relative ones are tried against ``base`` first, so a checkpoint can name
    its autoencoder as ``./autoencoder``) or a Hub repo id such as ``Overworld/Waypoint-1-Small``.
    """
    text = str(uri).strip() if uri is not None else ""
    if not text:
        raise ValueError("empty model path: pass a local folder or a Hugging Face repo id")
    candidates = [Path(text).expanduser()]
    if base is not None and not Path(text).is_absolute():
        candidates.insert(0, base / text)
    for folder in candidates:
        if folder.is_dir():
            return folder
    if not REPO_ID.match(text) or text.startswith("."):
        raise FileNotFoundError(f"model folder not found: {text}")
    return _download(text, allow_patterns)


def _download(repo_id: str, allow_patterns: list[str] | None) -> Path:
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    how = (f"download it on a connected machine with `hf download {repo_id}` (or point HF_HOME at a cache "
           f"that has it), or pass a local folder")
    reason = _hub_reachable()
    if reason is not None:
        raise ModelUnavailableError(
            f"'{repo_id}' is not in the local Hugging Face cache and the Hub is unreachable ({reason}): {how}.")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))
    except (HfHubHTTPError, OSError) as exc:
        raise ModelUnavailableError(f"could not fetch '{repo_id}' from the Hugging Face Hub ({exc}): {how}.") from exc
