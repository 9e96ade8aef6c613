"""Loading a split from the Hugging Face Hub, failing in seconds rather than minutes when offline.

`datasets` retries an unreachable hub for a long time before it gives up. So before calling it we
decide whether the hub can be used at all: with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, only a
copy already in the local cache can load, and `datasets` (which reads those variables at import)
looks nowhere else; otherwise a TCP connection to huggingface.co:443 must open within 3 seconds.
The check runs in a thread because `socket.create_connection`'s timeout does not bound the DNS
lookup, which can hang for much longer on a machine without network.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from grpolab.data.base import DataError

HUB_HOST, HUB_PORT = "huggingface.co", 443
CHECK_TIMEOUT_S = 3.0
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub accepts


def offline_mode() -> bool:
    """Whether the user asked for offline mode (cache only) through the environment."""
    return any(os.environ.get(v, "").upper() in TRUE_VALUES for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = CHECK_TIMEOUT_S) -> bool:
    """True when a TCP connection to the hub opens within `timeout` seconds (DNS included)."""
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((HUB_HOST, HUB_PORT), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=connect, daemon=True)  # daemon: a hung lookup cannot block exit
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def check_hub(name: str, local_hint: str) -> None:
    """Raise a DataError at once when the hub cannot serve `name`; `local_hint` says how to use a
    local copy instead (which field to set)."""
    if offline_mode():
        import datasets

        if datasets.config.HF_HUB_OFFLINE:
            return  # cache-only loading is fast; a miss raises quickly and is reported by load_split
        raise DataError(
            f"offline mode was set after the `datasets` library was imported, so loading '{name}' "
            f"could still wait on the network. Set HF_HUB_OFFLINE=1 before starting, or {local_hint}"
        )
    if not hub_reachable():
        raise DataError(
            f"cannot reach the Hugging Face Hub ({HUB_HOST}:{HUB_PORT}) to download '{name}'. "
            f"{local_hint} If '{name}' is already in your HF cache, set HF_HUB_OFFLINE=1 to use it."
        )


def load_split(
    name: str, config: str | None, split: str, local_hint: str, data_files: str | list[str] | None = None
) -> Any:
    """`datasets.load_dataset(name, config, split=split, data_files=...)`, every failure a DataError.
    `data_files`: files (or patterns) within the hub repo, as `load_dataset` takes them."""
    check_hub(name, local_hint)
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split, data_files=data_files)
    except Exception as err:  # not-found, bad config name, network, cache miss: all end the run here
        where = " (offline mode: only the local HF cache was searched)" if offline_mode() else ""
        raise DataError(
            f"could not load '{name}' (config {config!r}, split {split!r}){where}: {err}. {local_hint}"
        ) from err
