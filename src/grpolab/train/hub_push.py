"""`grpolab export --push-to-hub REPO`: upload an exported model folder with huggingface_hub.

The token comes from where huggingface_hub looks (HF_TOKEN, `hf auth login`); grpolab never sees
it. The repo id is checked before anything is exported, so a typo fails in a second, not after a
merge. Upload failures (no network, no permission) are one line, not a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grpolab.train.export import ExportError


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ExportError(f"--push-to-hub: {repo_id!r} is not a valid repo id ({err})") from None
    if "/" not in repo_id:
        raise ExportError(f"--push-to-hub: give the repo as OWNER/NAME, got {repo_id!r}")


def push_to_hub(folder: Path, repo_id: str, *, private: bool = False, api: Any = None) -> str:
    """Create `repo_id` (a model repo) if needed and upload `folder` as one commit; return its URL."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    api = api if api is not None else HfApi()
    try:
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=f"Upload {Path(folder).name} (grpolab export)",
        )
    except Exception as err:  # network, auth, quota: huggingface_hub raises many types
        raise ExportError(f"--push-to-hub {repo_id}: upload failed ({type(err).__name__}: {err})") from None
    return str(getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}")
