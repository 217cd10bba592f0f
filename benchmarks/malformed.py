"""Every malformed checkpoint of testkit/malformed.py through the merge CLI and the chat
CLI: each one's message, exit code, wall time and peak RSS, as a Markdown table (each CLI
runs in a process of its own, so time and RSS are its whole run). The app shows the same
line in its merge panel and in the pane (tests/test_malformed.py checks every case).

Run: `python benchmarks/malformed.py` (about 5 minutes on 2 cores)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit.malformed import CASES, broken_copy
from testkit.tiny_models import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]

# Runs a CLI's main in-process and reports its own peak RSS last, on stderr.
CHILD = """
import resource, sys
from {module}.__main__ import main
code = main(sys.argv[1:])
print(f"PEAK_RSS {{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}", file=sys.stderr)
sys.exit(code)
"""


def run(module: str, argv: list[str]) -> tuple[str, int, float, int]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD.format(module=module), *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    seconds = time.perf_counter() - started
    lines = [ln for ln in done.stderr.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
    peak = int(lines.pop().split()[1]) if lines and lines[-1].startswith("PEAK_RSS") else 0
    message = " / ".join(lines) if lines else done.stdout.strip().splitlines()[-1]
    return message, done.returncode, seconds, peak


def cell(text: str, root: Path) -> str:
    return text.replace(str(root) + "/", "").replace("|", "\\|")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="malformed-"))
    good = build_tiny_model(root / "good", "llama", 2)
    parent = build_tiny_model(root / "parent", "llama", 1)
    print("| case | merge CLI (exit status) | chat CLI (exit status) | slowest s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for case in CASES:
        folder = broken_copy(parent, root / case.replace(" ", "_").replace("^", ""), case)
        config = root / "merge.yml"
        config.write_text(f"slices:\n  - sources:\n      - model: {folder}\n        layer_range: [0, 4]\n"
                          f"      - model: {good}\n        layer_range: [0, 4]\nmerge_method: slerp\nbase_model: {folder}\n"
                          "parameters:\n  t: 0.5\ndtype: bfloat16\n")
        merged = run("merging", [str(config), str(root / "out")])
        chatted = run("inference", ["chat", str(folder), "--prompt", "hi", "--max-new-tokens", "2", "--precision", "bf16"])
        left = sorted(p.name for p in root.iterdir() if ".out" in p.name or p.name == "out")
        assert not left, f"{case}: left behind {left}"
        print(f"| {case} | {cell(merged[0], root)} ({merged[1]}) | {cell(chatted[0], root)} ({chatted[1]}) | "
              f"{max(merged[2], chatted[2]):.1f} | {max(merged[3], chatted[3]) / 1e6:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
