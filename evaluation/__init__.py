"""Measuring merges: the t-sweep, reply quality over prompt sets, and the offline demo
parent (its teacher data and build). Above both engines, below the UI; no gradio."""
