"""The chat's results panel: does the merge beat its parents? The figures of the Merged
pane's merge config, as a plot and a table, and written into its model card."""

from __future__ import annotations

from pathlib import Path

from arena.ratings import CARD_MARKER, card_section, config_results, plot_html, table_markdown
from arena.votes import app_store, config_hash, held_line
from core.errors import UserError
from core.policy import check_models
from merging.model_card import replace_section
from ui.context import shown_as_toast


def show_results(merged_ref: str, include_flagged: bool) -> tuple[str, str]:
    """The plot and table for the Merged pane's merge config."""
    if not merged_ref.strip():
        return "", "Results appear here once a merged model is in the Merged pane and blind rounds have been voted on."
    store = app_store()
    res = config_results(store, config_hash(merged_ref.strip()), include_flagged)
    return plot_html(res), f"{table_markdown(res)}\n\n{held_line(store)}"


@shown_as_toast
def add_results_to_card(merged_ref: str, include_flagged: bool) -> str:
    """Write the current figures into the merged folder's README.md (its arena section
    replaced, never appended twice)."""
    folder = Path(merged_ref.split("#")[0].strip())
    readme = folder / "README.md"
    if not merged_ref.strip() or not (folder / "mergekit_config.yml").is_file() or not readme.is_file():
        raise UserError("model card", "the Merged pane is not a merge made here", "run a merge, then 'Chat with this merge'")
    check_models(str(folder))
    res = config_results(app_store(), config_hash(str(folder)), include_flagged)
    if not res.pairs:
        raise UserError("model card", "no counted votes for this merge yet", "vote in a few blind rounds first")
    readme.write_text(replace_section(readme.read_text(), CARD_MARKER, card_section(res)))
    return f"Written to `{readme}`: {res.sentence()}"
