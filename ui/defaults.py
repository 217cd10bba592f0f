"""What a fresh page merges: the default parents and t preset, for the Merge tab's form
and for the first Chat, which merges them when nothing is merged yet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.sources import DEFAULT_MODEL, cache_root, is_converted
from inference.demo_parent import built_demo_parent
from merging.form import PRESETS
from ui.context import DEFAULT_A, DEFAULT_B, ON_SPACE, outputs_root

# The demo pair's curve: PRESETS["V-shape"], t = [0, 0.5, 1, 0.5, 0] over the layers for
# every filter. The ends (embeddings, first and last layers, which shape how a reply
# starts and which tokens it picks) stay with parent A, the original; the middle layers,
# where a fine-tune's persona mostly lives, come from parent B, the pirate. So the blend
# answers as correctly as the original and still shows a trace of the pirate, where a
# constant 0.5 mostly looked like one parent or the other (checked on the demo prompts).
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
