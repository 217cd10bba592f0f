"""Slerp Arena: SLERP-merge two language models (mergekit-compatible), then chat with the
merge beside its parents. This file joins the tabs (ui/merge_tab.py, ui/chat_tab.py) and
holds the links between them: "Chat with this merge", and the first Chat, which merges
the Merge tab's defaults when nothing is merged yet (ui/first_run.py)."""

from __future__ import annotations

import threading

import gradio as gr

from core import zerogpu
from core.errors import UserError
from core.hub_access import SIGN_IN
from core.sources import DEFAULT_MODEL, resolve_model
from inference import cpu_kernels
from merging import slerp_kernel
from ui.chat_tab import ChatSession, build_chat_tab
from ui.context import PRIVATE, CancelSession, Visitor
from ui.first_run import merge_defaults, on_chat_opened, parents_of
from ui.merge_tab import build_merge_tab

# Events waiting, all visitors together. Left unset, Gradio caps them at 1 on ZeroGPU, and a
# click while anything waited (unchecking blind mode, then Send) was refused with "This
# application is currently busy" (seen in the ZeroGPU Chromium test on a busy machine).
QUEUE_SIZE = 64


def chat_with_merge(output_path: str):
    """The merge and its parents (as its config names them: the form may have changed since,
    or the page reloaded) into the Chat tab, which opens; the first-chat notice, which
    described another merge, is cleared."""
    if not output_path:
        raise gr.Error("merge: nothing merged yet — run a merge first")
    return output_path, *parents_of(output_path), gr.Tabs(selected="chat"), ""


def signed_in(merge_session: CancelSession, chat_session: ChatSession, profile: gr.OAuthProfile | None,
              token: gr.OAuthToken | None) -> str:
    """At every page load (signing in and out reload the page): the visitor whose token this
    page's downloads and pushes use (core/hub_access.py), and a line saying so."""
    visitor = Visitor(token.token, profile.username) if token and profile else Visitor()
    merge_session.visitor = visitor
    chat_session.arena.token = visitor.token
    if visitor.username:
        return (f"Signed in as **{visitor.username}**: gated and private models download with your account, "
                "and Push to the Hub goes to it.")
    return "Not signed in: models download as the Space does, and gated ones need you to sign in."


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Slerp Arena") as demo:
        gr.Markdown("# 🧪 Slerp Arena\nSLERP-merge two language models (mergekit-compatible), then chat with the merge beside its parents.")
        if SIGN_IN:  # Gradio serves the sign-in routes once a LoginButton exists (on a Space with hf_oauth: true)
            with gr.Row(equal_height=True):
                gr.LoginButton(scale=0, min_width=260)
                who = gr.Markdown(elem_id="signed-in")
        # This browser's latest merge, kept in its storage: it survives a reload (signing in
        # reloads the page), and on a Space nobody else's merge is offered in its place.
        own = gr.BrowserState("", storage_key="slerp-arena-latest-merge")
        with gr.Tabs() as tabs:
            with gr.Tab("Merge", id="merge"):
                merge = build_merge_tab(demo, own)
            with gr.Tab("Chat", id="chat") as chat_page:
                with gr.Row(equal_height=True):
                    first_notice = gr.Markdown(elem_id="first-chat-notice")
                    to_sweep = gr.Button("📈 The blend along t: t-sweep", size="sm", scale=0, min_width=220, elem_id="to-t-sweep")
                chat = build_chat_tab(demo, own)
        # One chat reply shows a point of the blend; the t-sweep (Merge tab) shows the whole curve.
        to_sweep.click(lambda: gr.Tabs(selected="merge"), None, tabs, api_visibility=PRIVATE, queue=False).then(
            None, js="() => document.getElementById('t-sweep')?.scrollIntoView({block: 'start'})")
        merge.to_chat.click(chat_with_merge, merge.output_path,
                            [chat.merged_ref, chat.parent_a, chat.parent_b, tabs, first_notice], api_visibility=PRIVATE)
        # Opened with no merged model, the Chat tab merges the defaults first (ui/first_run.py):
        # the select decides at once; a needed merge is a new `default_merge`, whose change runs it.
        models = [chat.merged_ref, chat.parent_a, chat.parent_b]
        default_merge = gr.State(None)
        chat_page.select(on_chat_opened, [*models, chat.session], [*models, first_notice, default_merge], api_visibility=PRIVATE,
                         concurrency_limit=None)
        default_merge.change(merge_defaults, [default_merge, *models, chat.session], [*models, first_notice], api_visibility=PRIVATE,
                             concurrency_id="device", concurrency_limit=1)
        chat.merged_ref.input(lambda: "", None, first_notice, api_visibility=PRIVATE)  # a typed model: the notice is stale
        # The notice names the parents: hidden in blind mode, whichever comes first (seen in
        # Chromium: "merged SmolLM2… with…" above a blind round).
        chat.blind.change(lambda on: gr.Markdown(visible=not on), chat.blind, first_notice, api_visibility=PRIVATE,
                          concurrency_limit=None)
        if SIGN_IN:
            demo.load(signed_in, [merge.session, chat.session], who, api_visibility=PRIVATE, concurrency_limit=None)
    return demo


def queued(demo: gr.Blocks) -> gr.Blocks:
    """The app's queue: one job at a time per event unless it says otherwise (the device's
    work shares one), QUEUE_SIZE events waiting."""
    return demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)


def prepare_default_model() -> None:
    """Convert the bundled GGUF and build the C kernels in the background at start-up (once
    per machine), so the page answers at once and the first visitor's parents panel, chat
    and merge find them ready."""
    try:
        resolve_model(DEFAULT_MODEL)
    except UserError as exc:
        print(f"warning: {exc}")
    cpu_kernels.kernel(), slerp_kernel.kernel()  # where they cannot be built, each says why once


if __name__ == "__main__":
    zerogpu.start()
    threading.Thread(target=prepare_default_model, name="prepare default model", daemon=True).start()
    queued(build_app()).launch(show_error=True)
