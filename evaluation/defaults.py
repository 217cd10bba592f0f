"""What a fresh page merges: the default parents and t preset, for the Merge tab's form
and for the first Chat, which merges them when nothing is merged yet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.places import ON_SPACE, outputs_root
from core.policy import public_mode
from core.sources import DEFAULT_MODEL, cache_root, is_converted
from evaluation.demo_parent import built_demo_parent
from merging.form import PRESETS, MergeForm, config_from_form

# Offline: the bundled SmolLM2 with itself (until the demo parent is built). On a Space:
# the Qwen2.5 seed pair, Instruct as base, on the V-curve.
DEFAULT_A, DEFAULT_B = ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B") if ON_SPACE else (DEFAULT_MODEL, DEFAULT_MODEL)

# The demo pair's curve: PRESETS["V-shape"], t = [0, 0.5, 1, 0.5, 0] over the layers for
# every filter: the ends (embeddings, first and last layers) from parent A, the original,
# the middle layers from parent B, the pirate. Chosen because its merge visibly blends
# both on the demo prompts, where constant 0.5 and the inverted V answer like the pirate
# alone (check with `python -m evaluation sweep` when the demo parent's training changes).
BLEND_PRESET = "V-shape"
SELF_PRESET = "constant 0.5"  # the original with itself: any t gives the same model
DEMO_MERGE = "demo-merge"  # the first chat's default merges: outputs/demo-merge, demo-merge-2, …


@dataclass(frozen=True)
class StartPair:
    a: str
    b: str
    preset: str
    blend: bool  # False: the original merged with itself, because the demo parent is not built

    def form(self) -> MergeForm:
        """The Merge tab's form for this pair: its preset's t gradients, all layers, bf16."""
        return MergeForm(self.a, self.b, *PRESETS[self.preset])

    def yaml(self) -> str:
        """The YAML the Merge tab shows for this form."""
        return config_from_form(self.form()).to_yaml()


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
    """The parents' dropdown: the original, the demo parent(s), and the merges offered to everyone."""
    parents = cache_root() / "demo-parent"
    built = sorted(str(p) for p in parents.glob("*") if (p / "config.json").is_file()) if parents.is_dir() else []
    return [DEFAULT_MODEL, *built, *(str(p) for p in sorted(shared_merges()))]


def shared_merges() -> list[Path]:
    """The merges under outputs/ any visitor may be offered: all of them on one's own
    machine; on a public app only the first chat's default merges, which the app made (a
    visitor's own merge is theirs: it reaches their Chat tab through its link)."""
    root = outputs_root()
    merges = [p.parent for p in root.glob("*/mergekit_config.yml")] if root.is_dir() else []
    return [m for m in merges if not public_mode() or m.name.startswith(DEMO_MERGE)]


def own_merge(stored: str | None) -> str:
    """`stored` (a browser's latest merge, as its storage kept it across reloads, or a
    Chat field) while it is a merge under outputs/; '' otherwise."""
    if not stored:
        return ""
    root = outputs_root().resolve()
    folder = (root / stored).resolve()
    return str(folder) if folder.is_relative_to(root) and (folder / "mergekit_config.yml").is_file() else ""


def latest_merge() -> str:
    """The merge a fresh Chat tab opens with: the newest shared one, leaving out a first-chat
    merge of a pair that is no longer the start pair (the original with itself, made before
    the demo parent was built, would make the demo's three panes answer alike); '' if none."""
    current = start_pair().yaml()
    fresh = [m for m in shared_merges() if not m.name.startswith(DEMO_MERGE) or (m / "mergekit_config.yml").read_text() == current]
    return str(max(fresh, key=lambda m: m.stat().st_mtime)) if fresh else ""
