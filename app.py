"""Slerp Arena — the Gradio UI. It only wires the two tabs to `merging` and `inference`."""

import gradio as gr


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Slerp Arena") as demo:
        gr.Markdown("# Slerp Arena\nSLERP-merge two language models, then chat with the merge beside its parents.")
        with gr.Tab("Merge"):
            gr.Markdown("The merge form comes here. Today: `python -m merging CONFIG.yml OUTPUT_DIR`.")
        with gr.Tab("Chat"):
            gr.Markdown("Side-by-side chat with the merged model and both parents comes here.")
    return demo


if __name__ == "__main__":
    build_app().launch()
