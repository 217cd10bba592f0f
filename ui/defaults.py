"""What a fresh page merges: the default parents and t preset, for the Merge tab's form
and for the first Chat, which merges them when nothing is merged yet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.sources import DEFAULT_MODEL, cache_root, is_converted
from inference.demo_parent import built_demo_parent
from merging.form import PRESETS, config_from_form, form_from_fields
from ui.context import DEFAULT_A, DEFAULT_B, ON_SPACE, outputs_root

# The demo pair's curve: PRESETS["V-shape"], t = [0, 0.5, 1, 0.5, 0] over the layers for
# every filter: the ends (embeddings, first and last layers) from parent A, the original,
# the middle layers from parent B, the pirate. Chosen because it is the curve whose merge
# visibly blends both. Measured on 6 demo prompts (greedy, 40 tokens, the demo parent of
# 2026-11-23): constant 0.5 and the inverted V [1, 0.5, 0, 0.5, 1] began all 6 replies
# with "Arr!" (the pirate, no trace of the original); this V began 3 of 6 with "Arr!" and
# answered the other 3 like the original ("The capital of France is Paris."). Check again
# when the demo parent's training changes.
BLEND_PRESET = "V-shape"
SELF_PRESET = "constant 0.5"  # the original with itself: any t gives the same model


@dataclass(frozen=True)
class StartPair:
    a: str
    b: str
    preset: str
    blend: bool  # False: the original merged with itself, because the demo parent is not built

    def fields(self) -> tuple[str, str, str, str, str, int, int, str]:
        """The Merge tab's eight form fields (parents, three t gradients, all layers, bf16)."""
        return (self.a, self.b, *PRESETS[self.preset], 0, 0, "bfloat16")

    def yaml(self) -> str:
        """The YAML the Merge tab shows for these fields."""
        return config_from_form(form_from_fields(*self.fields())).to_yaml()


def demo_pair(folder: str) -> StartPair:
    return StartPair(DEFAULT_MODEL, folder, BLEND_PRESET, True)


def demo_parent() -> str | None:
    """The built demo parent's folder, or None; never builds. Before the bundled model is
    converted (a machine's first start) it is not looked for: finding it needs the converted
    folder, and start-up must not wait 30 s for the conversion."""
    if ON_SPACE or not is_converted(DEFAULT_MODEL):
        return None
    folder = built_demo_parent()
    return str(folder) if folder else None


def start_pair() -> StartPair:
    """On a Space: the Qwen2.5 seed pair with the V-curve. Offline: the original SmolLM2 (A)
    and the demo parent (B) with the V-curve once it is built, else the original with itself."""
    if ON_SPACE:
        return StartPair(DEFAULT_A, DEFAULT_B, BLEND_PRESET, True)
    if (demo := demo_parent()) is not None:
        return demo_pair(demo)
    return StartPair(DEFAULT_A, DEFAULT_B, SELF_PRESET, False)


def known_models() -> list[str]:
    """The parents' dropdown: the original, the demo parent(s), and the merges made here."""
    def folders(root: Path) -> list[str]:
        return sorted(str(p) for p in root.glob("*") if (p / "config.json").is_file()) if root.is_dir() else []

    return [DEFAULT_MODEL, *folders(cache_root() / "demo-parent"), *folders(outputs_root())]
