"""Push a merged folder to the Hugging Face Hub (only where the Hub is reachable)."""

from __future__ import annotations

from pathlib import Path

from core.errors import UserError
from core.sources import HUB_ID


class HubOffline(UserError):
    """Raised before any network call when HF_HUB_OFFLINE is set; front ends add what the
    user can do instead (the app offers the folder as a zip)."""

    def __init__(self) -> None:
        super().__init__("push", "this app runs offline (HF_HUB_OFFLINE is set)",
                         "copy the merged folder to a machine that is online and run `hf upload user/name FOLDER`")


def push_folder(folder: Path, repo_id: str, token: str) -> str:
    from huggingface_hub import HfApi, is_offline_mode

    if not HUB_ID.match(repo_id.strip()):
        raise UserError("repo", f"'{repo_id}' is not a Hub repo id", "write it as user/name")
    if is_offline_mode():
        raise HubOffline()
    api = HfApi(token=token.strip() or None)
    try:
        url = api.create_repo(repo_id.strip(), exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id.strip())
    except Exception as exc:  # noqa: BLE001 -- network, auth and permission failures all end here
        raise UserError("push", f"the Hub did not accept the upload ({exc.__class__.__name__})",
                         "check the network, the token (write access) and the repo name") from None
    return str(url)
