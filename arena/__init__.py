"""The arena: blind side-by-side rounds, votes, ratings and identity-leak flags. Above the
engines, below the UI; it imports no gradio."""
