"""The Gradio app, one module per tab: each holds its components, its handlers as plain
functions (tests call them without a browser) and its `build_*` function."""
