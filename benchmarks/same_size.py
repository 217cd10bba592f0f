"""Gemma2 against Llama of the same size on the lean loop, beside llama.cpp's server on the
same two models: random weights of gemma-2-2b's exact config and of a Llama with the same
tensors (inference/bench.py builds both), converted to GGUF Q8_0 with the
convert_hf_to_gguf.py of the llama.cpp sources llama-server was built from. Decode tok/s,
medians of rounds in which every contender runs in turn.

    python benchmarks/same_size.py [--tokens 32]

Goal (issue 39): Gemma2 decodes within 10% of the Llama-shaped model, in int8 and FP8.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from core.cpu import describe_cpu
from core.native import chosen_target
from inference.bench import BENCH_PROMPT, gemma2_and_llama_shaped, same_size
from inference.chat import build_prompt

try:
    import llama_server
except ImportError:  # run as a module
    from benchmarks import llama_server

# The bench models carry SmolLM2's BPE tokenizer: the converters try a SentencePiece one
# first (Gemma2's only that), so they are pointed at the GPT-2-style vocabulary reader.
CONVERT = """
import runpy, sys
sys.path[:0] = [{sources!r}, {sources!r} + "/gguf-py"]
from conversion import base
base.TextModel._set_vocab_sentencepiece = lambda self, *args, **kwargs: self._set_vocab_gpt2()
sys.argv = ["convert_hf_to_gguf.py", {folder!r}, "--outtype", "q8_0", "--outfile", {out!r}]
runpy.run_path({sources!r} + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def converted(folder: Path) -> Path:
    """`folder` as GGUF Q8_0, converted once."""
    out = llama_server.build_dir() / f"{folder.name}.Q8_0.gguf"
    if not out.exists():
        work = out.with_suffix(".partial")
        script = CONVERT.format(sources=str(llama_server.build_dir() / "llama.cpp"), folder=str(folder), out=str(work))
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
        work.rename(out)
    return out


def server_reply(url: str, prompt: str, tokens: int) -> Callable[[], float | None]:
    """One reply of `tokens` tokens from llama-server (EOS ignored, no prompt cache): its
    own decode tok/s."""
    body = json.dumps({"prompt": prompt, "n_predict": tokens, "ignore_eos": True, "cache_prompt": False, "temperature": 0}).encode()

    def one_run() -> float | None:
        request = urllib.request.Request(f"{url}/completion", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as answer:
            return json.load(answer)["timings"]["predicted_per_second"]

    return one_run


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"cpu: {describe_cpu()}; C kernels: {chosen_target() or 'off, torch only'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    folders = gemma2_and_llama_shaped()
    tokenizer = AutoTokenizer.from_pretrained(next(iter(folders.values())))  # SmolLM2's, as ours builds the prompt
    prompt = build_prompt(tokenizer, [{"role": "user", "content": BENCH_PROMPT}]).text
    with contextlib.ExitStack() as servers:
        anchors = {}
        try:
            llama_server.build()
            for label, folder in folders.items():
                url = servers.enter_context(llama_server.server(converted(folder), slots=1, threads=torch.get_num_threads()))
                anchors[f"{label} llama.cpp-q8_0"] = server_reply(url, prompt, args.tokens)
        except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
            print(f"llama-server not measured: {exc.__class__.__name__}: {str(exc)[-300:]}", flush=True)
        same_size(args.tokens, anchors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
