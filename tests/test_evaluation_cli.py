"""`python -m evaluation`: one entry point for the sweep, the quality figures, the demo
parent and a prompt set's replies."""

import json
import subprocess
import sys

from helpers import run_main

from core.places import ROOT
from evaluation.__main__ import main


def test_replies_gives_one_json_line_per_reply_per_model(tiny_models, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\nhello\n\nhow are you?\n")
    a, b = str(tiny_models("llama", 1)), str(tiny_models("qwen2", 2))
    code, out, _ = run_main(main, ["replies", a, b, "--precision", "bf16", "--prompts", prompts, "--max-new-tokens", "4"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(r["model"], r["prompt"]) for r in rows] == [(a, "hello"), (b, "hello"), (a, "how are you?"), (b, "how are you?")]
    assert all(r["tokens"] >= 1 and r["seconds"] > 0 and isinstance(r["reply"], str) for r in rows)
    code, _, err = run_main(main, ["replies", a, "--prompts", tmp_path / "none.txt"], capsys)
    assert code == 2 and err.startswith("error: --prompts: file") and "none.txt" in err


def test_each_command_is_reached_from_the_package_entry_point(tmp_path, capsys):
    listing = subprocess.run([sys.executable, "-m", "evaluation", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and all(name in listing.stdout for name in ("sweep", "quality", "demo-parent", "replies"))
    code, _, err = run_main(main, ["sweep", tmp_path / "missing.yml", "--prompts", ROOT / "prompts" / "demo.jsonl"], capsys)
    assert code == 2 and "missing.yml" in err
    try:
        main(["quality", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert "usage: python -m evaluation quality" in capsys.readouterr().out
