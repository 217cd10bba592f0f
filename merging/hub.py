"""Push a merged folder to the Hugging Face Hub (only where the Hub is reachable)."""

from __future__ import annotations

from pathlib import Path

from core.errors import UserError
from core.sources import HUB_ID


def push_folder(folder: Path, repo_id: str, token: str) -> str:
    from huggingface_hub import HfApi, constants

    if not HUB_ID.match(repo_id.strip()):
        raise UserError("repo", f"'{repo_id}' is not a Hub repo id", "write it as user/name")
    if constants.HF_HUB_OFFLINE:
        raise UserError("push", "this app runs offline (HF_HUB_OFFLINE is set)", "download the folder and push it from a machine online")
    api = HfApi(token=token.strip() or None)
    try:
        api.create_repo(repo_id.strip(), exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id.strip())
    except Exception as exc:  # noqa: BLE001 -- network, auth and permission failures all end here
        raise UserError("push", f"the Hub did not accept the upload ({exc.__class__.__name__})",
                         "check the network, the token (write access) and the repo name") from None
    return f"https://huggingface.co/{repo_id.strip()}"
