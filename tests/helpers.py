"""Helpers shared by the test modules (configs, weights, chat views, in-process CLIs)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core import zerogpu
from inference import cache, generation
from testkit.app_process import text_of
from testkit.zerogpu_device import ZeroGPUDevice, zerogpu_space

LAZY_T = """
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
"""


def slices_config(base: Path, other: Path, t_yaml: str = LAZY_T, layers: tuple[int, int] = (0, 4), extra: str = "") -> str:
    return f"""
slices:
  - sources:
      - model: {base}
        layer_range: [{layers[0]}, {layers[1]}]
      - model: {other}
        layer_range: [{layers[0]}, {layers[1]}]
merge_method: slerp
base_model: {base}
parameters:
{t_yaml}
dtype: bfloat16
{extra}"""


def v_config(instruct: Path, base: Path) -> str:
    return f"""
models:
  - model: {base}
  - model: {instruct}
merge_method: slerp
base_model: {instruct}
parameters:
  t: [0, 0.5, 1, 0.5, 0]
dtype: bfloat16
"""


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    return weights


def peaked(folder: Path, out: Path) -> Path:
    """A copy whose lm_head is scaled up: random tiny models predict almost uniformly, and
    real models (the t-sweep's subject) do not."""
    shutil.copytree(folder, out)
    weights = load_file(out / "model.safetensors")
    weights["lm_head.weight"] = weights["lm_head.weight"] * 40
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


def tiny_yaml(a, b, t="0.5") -> str:
    return f"models:\n  - model: {a}\n  - model: {b}\nmerge_method: slerp\nbase_model: {a}\nparameters:\n  t: {t}\ndtype: bfloat16\n"


def unpack(view) -> tuple[list[list[dict]], list[str]]:
    """(three histories with plain-text content, three stats lines) from a chat handler's
    ChatView, or from the output tuple the page and the API get (chats first, then stats)."""
    chats, stats = (view.chats, view.stats) if hasattr(view, "chats") else (view[:3], view[3:6])
    bots = [bot.value if hasattr(bot, "value") else bot for bot in chats]  # relabelled views carry gr.Chatbot updates
    histories = [[{"role": m["role"], "content": text_of(m)} for m in bot] for bot in bots]
    return histories, list(stats)




def run_main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """A CLI's main(argv) in-process: (exit code, stdout, stderr), its output only."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def streamed_together(snapshots) -> tuple[bool, list]:
    """Drain side-by-side snapshots: (every pane had text before any pane finished, the
    final snapshot). True means the panes really ran at the same time."""
    changed, previous, snapshot = [], None, []
    for snapshot in snapshots:
        previous = previous or [""] * len(snapshot)
        for i, reply in enumerate(snapshot):
            if reply.text != previous[i]:
                changed.append(i)
                previous[i] = reply.text
    panes = range(len(snapshot))
    first = [changed.index(i) for i in panes]
    last = [len(changed) - 1 - changed[::-1].index(i) for i in panes]
    return max(first) < min(last), snapshot


def slowed(monkeypatch, seconds=0.05):
    """Replies decode one piece of text per `seconds`, so a test can act mid-reply. The
    decoding itself is slowed: slowing the snapshots let the replies run ahead and end
    within a few of them (folded together), and a "mid-reply" Send came after the end."""
    real = generation.generate_reply

    def slow(*args, on_text=None, **kwargs):
        def slow_text(text):
            time.sleep(seconds)
            on_text(text)
        return real(*args, on_text=slow_text if on_text else None, **kwargs)

    monkeypatch.setattr(generation, "generate_reply", slow)


def held_first_word(monkeypatch, pane: str) -> threading.Event:
    """The reply in `pane` (its label) shows no word until it is stopped: a pane still
    reading its prompt when the others have begun. Once the returned event is set, the
    replies after it are not held."""
    real, release = generation.generate_reply, threading.Event()

    def held(loaded, history, settings, stop, *args, conversation="", **kwargs):
        if conversation.endswith(f"/{pane}") and not release.is_set():
            stop.wait(30)
        return real(loaded, history, settings, stop, *args, conversation=conversation, **kwargs)

    monkeypatch.setattr(generation, "generate_reply", held)
    return release


def held_loading(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """The models' cache holds every load until `release` is set; `loading` says one began."""
    loading, release, real = threading.Event(), threading.Event(), cache.MODELS.get

    def get(*args, **kwargs):
        loading.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache.MODELS, "get", get)
    return loading, release


@contextlib.contextmanager
def on_zerogpu():
    """This process as a ZeroGPU Space against the device stand-in (yielded); core.zerogpu
    wraps afresh in the real spaces.GPU."""
    device, cuda = ZeroGPUDevice().start(), torch.cuda.is_available()
    zerogpu.forget_wrappers()
    try:
        with zerogpu_space(device):
            yield device
    finally:
        zerogpu.forget_wrappers()
        device.stop()
    # Nothing stays for the tests that follow: CUDA as it was, no torch function mode, no spaces.
    assert torch.cuda.is_available() == cuda and torch._C._len_torch_function_stack() == 0 and "spaces" not in sys.modules


def set_max_new_tokens(page, tokens: int) -> None:
    """Open the Sampling accordion, set max new tokens, close it again. Its first opening can
    re-render the slider under a fill (1 run in 4 kept 256), so the fill is tried again."""
    from playwright.sync_api import expect

    page.get_by_text("Sampling (shared by all panes)").click()
    box = page.get_by_label("max new tokens").first
    for _ in range(3):
        box.fill(str(tokens))
        box.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == str(tokens):
            break
    expect(box).to_have_value(str(tokens))
    page.get_by_text("Sampling (shared by all panes)").click()


def choose_parents(page, a: str, b: str) -> None:
    """Type the two parents into the Merge tab and wait until the panel describes them as
    compatible. The "✅ compatible" of the pair the page opened with does not count: a Merge
    clicked then was refused, as the YAML did not show the typed pair yet (seen in CI)."""
    from playwright.sync_api import expect

    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)  # the page's own pair, loaded
    for label, name in (("Parent A (base_model, t = 0)", a), ("Parent B (t = 1)", b)):
        box = page.get_by_label(label)
        box.fill(name)
        box.press("Enter")
    expect(page.get_by_text(f"Parent B: {b}")).to_be_visible(timeout=60_000)  # the panel describes the typed pair
    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)


def pane_messages(page, settled=lambda panes: True, timeout_s: float = 15) -> list[list[tuple[str, str]]]:
    """Each pane's messages in order, as (user or bot, text), once `settled` holds for them
    (or as they are after `timeout_s`). A pane renders a changed message's Markdown a
    moment after the page has its value: in CI on a busy host, as Regenerate turned on, a
    pane still showed the waiting mark its fourth message had lost."""
    deadline = time.monotonic() + timeout_s
    while True:
        panes = page.evaluate("""() => [...document.querySelectorAll('#chat-panes .block')]
          .filter(b => b.querySelector('.message'))
          .map(b => [...b.querySelectorAll('.message.user, .message.bot')]
            .map(m => [m.classList.contains('user') ? 'user' : 'bot', m.innerText.trim()]))""")
        if settled(panes) or time.monotonic() > deadline:
            return panes
        page.wait_for_timeout(200)
