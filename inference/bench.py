"""Decode and prefill speed per precision, side by side with llama.cpp when it is installed.

    python -m inference bench [MODEL] [--tokens 128] [--space-default] [--gemma2-shaped]

Every line is measured in this run: tok/s (median of 3 rounds, each running every
contender in turn) for `--tokens` greedy tokens (each reply is made that long) through the
app's decode loop and, for comparison, through transformers' generate (`generate_tok_s`),
the prompt tokens per second to the first token of a 1,000-token prompt (prefill, median
of 5 rounds in the same way), the ratio to bf16 and, when `llama_cpp` is importable, to
llama.cpp on the same model requantized to Q8_0 with the same prompt, token count and
thread count (its prompt processing timed the same way, its prompt cache reset each time). `--space-default` adds a random-weight model
with Qwen2.5-0.5B's exact config (the online Space's default size): one pane per
precision, then three panes at once (merged int8 beside two bf16 parents).
`--gemma2-shaped` adds random-weight models of gemma-2-2b's exact config and of a Llama with
the same tensors, their decode tok/s side by side in int8 and FP8.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import PretrainedConfig

from core.cpu import describe_cpu
from core.native import chosen_target
from core.sources import BUNDLED_PREFIX, bundled_gguf, cache_root, kind_of
from inference.chat import build_prompt
from inference.decoder import DECODER_ENV
from inference.generation import GenerationSettings, generate_reply, run_side_by_side
from inference.loading import LoadedModel, load_model
from inference.sharing import Cores

BENCH_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
PREFILL_TOKENS = 1000
# Decode figures are medians of this many rounds: single runs on shared cores vary by a third.
REPEATS = 3
PREFILL_ROUNDS = 5  # a prefill is one timing, not an average over a reply's tokens
LLAMA_CPP_HINT = ("llama.cpp not measured: `pip install llama-cpp-python==0.3.36` (no wheel on the registry: it compiles "
                  "from source, about 10 minutes on 2 cores) to compare in the same run")


def one_reply(loaded: LoadedModel, tokens: int) -> Callable[[], float]:
    """A function that decodes one `tokens`-long greedy reply and returns its tok/s."""
    history = [{"role": "user", "content": BENCH_PROMPT}]
    generate_reply(loaded, history, GenerationSettings(temperature=0.0, max_new_tokens=8), threading.Event())  # warm-up
    settings = GenerationSettings(temperature=0.0, max_new_tokens=tokens, min_new_tokens=tokens)
    return lambda: generate_reply(loaded, history, settings, threading.Event()).stats.tokens_per_s


def interleaved_medians(runs: dict[str, Callable[[], float | None]], rounds: int = REPEATS) -> dict[str, float | None]:
    """`rounds` rounds, each running every contender once in turn; the median per contender.
    Measured one after another instead, a neighbour's load on the shared memory bus fell on
    one precision and not the other (0.5B-shaped int8 over bf16: 2.09x in one run, 1.19x in
    the next)."""
    measured: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            speed = run()
            if speed:
                measured[name].append(speed)
    return {name: statistics.median(speeds) if speeds else None for name, speeds in measured.items()}


def generate_tok_s(loaded: LoadedModel, tokens: int) -> float | None:
    """The same reply through transformers' generate instead of the lean loop
    (inference/decoder.py), for the side-by-side ratio."""
    previous = os.environ.get(DECODER_ENV)
    os.environ[DECODER_ENV] = "transformers"
    try:
        run = one_reply(loaded, tokens)
        speeds = [speed for speed in (run() for _ in range(REPEATS)) if speed]
        return statistics.median(speeds) if speeds else None
    finally:
        os.environ.pop(DECODER_ENV)
        if previous is not None:
            os.environ[DECODER_ENV] = previous


def long_message(loaded: LoadedModel) -> list[dict[str, str]]:
    """A conversation of one message of PREFILL_TOKENS tokens."""
    words = (BENCH_PROMPT + " ") * (PREFILL_TOKENS // 10)
    ids = loaded.tokenizer(words, add_special_tokens=False)["input_ids"][:PREFILL_TOKENS]
    return [{"role": "user", "content": loaded.tokenizer.decode(ids)}]


def prefill_run(loaded: LoadedModel) -> Callable[[], float]:
    """A function that prefills the long message once and returns its prompt tokens per second."""
    history, settings = long_message(loaded), GenerationSettings(temperature=0.0, max_new_tokens=1)

    def one_run() -> float:
        stats = generate_reply(loaded, history, settings, threading.Event()).stats
        return stats.prompt_tokens / (stats.first_token_s or stats.seconds)

    return one_run


def llama_cpp_model(ref: str):
    """llama.cpp on the same model: the GGUF requantized to Q8_0 through llama-cpp-python's
    own quantize API, with our thread count; None where it cannot run."""
    try:
        import llama_cpp
    except ImportError:
        return None
    kind = kind_of(ref)
    if kind not in ("bundled", "gguf"):
        return None  # llama.cpp reads GGUF; converting a safetensors folder is out of scope here
    source = bundled_gguf(ref[len(BUNDLED_PREFIX):]) if kind == "bundled" else Path(ref)
    q8 = cache_root() / "llama-cpp" / f"{source.stem}.Q8_0.gguf"
    if not q8.is_file():
        q8.parent.mkdir(parents=True, exist_ok=True)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
        params.allow_requantize = True
        with tempfile.NamedTemporaryFile(dir=q8.parent, suffix=".gguf", delete=False) as work:
            llama_cpp.llama_model_quantize(str(source).encode(), work.name.encode(), params)
        os.replace(work.name, q8)
    threads = torch.get_num_threads()
    return llama_cpp.Llama(str(q8), n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)


def llama_cpp_reply(llm, loaded: LoadedModel, tokens: int) -> Callable[[], float | None]:
    """A function that decodes one reply in llama.cpp and returns its tok/s: the same
    chat-templated prompt and token count."""
    prompt = build_prompt(loaded.tokenizer, [{"role": "user", "content": BENCH_PROMPT}]).text
    llm.create_completion(prompt, max_tokens=8, temperature=0.0)  # warm-up

    def one_run() -> float | None:
        first = last = None
        count = 0
        for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, stream=True):
            last = time.perf_counter()
            first = first or last
            count += 1
        return (count - 1) / (last - first) if count > 1 and last > first else None

    return one_run


def llama_cpp_prefill(llm, loaded: LoadedModel) -> Callable[[], float]:
    """A function that runs llama.cpp's prompt processing of the same long message,
    chat-templated, its prompt cache reset first, and returns tokens per second to the
    first token."""
    prompt = build_prompt(loaded.tokenizer, long_message(loaded), context_length=2048, max_new_tokens=1).text
    count = len(llm.tokenize(prompt.encode(), add_bos=False, special=True))

    def one_run() -> float:
        llm.reset()
        started = time.perf_counter()
        next(iter(llm.create_completion(prompt, max_tokens=1, temperature=0.0, stream=True)))
        return count / (time.perf_counter() - started)

    return one_run


def _shown(value: float | None, digits: int) -> str:
    """A speed, or n/a where every run of it was too short to time."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, reference: float | None) -> str:
    return "n/a" if value is None or not reference else f"{value / reference:.2f}"


def bench_model(ref: str, tokens: int, label: str, llama_cpp: bool = True) -> dict[str, LoadedModel]:
    cores = Cores()  # three_panes runs them side by side, as the app's cache would
    models = {precision: load_model(ref, precision, cores=cores) for precision in ("bf16", "int8", "fp8")}
    runs = {precision: one_reply(loaded, tokens) for precision, loaded in models.items()}
    llm = llama_cpp_model(ref) if llama_cpp else None
    reference = llama_cpp_reply(llm, models["bf16"], tokens) if llm else None
    if reference:
        runs = {"llama.cpp-q8_0": reference, **runs}
    elif llama_cpp:
        print(LLAMA_CPP_HINT, flush=True)
    speeds = interleaved_medians(runs)
    prefill_runs = {precision: prefill_run(loaded) for precision, loaded in models.items()}
    if llm:
        prefill_runs["llama.cpp-q8_0"] = llama_cpp_prefill(llm, models["bf16"])
    prefills = interleaved_medians(prefill_runs, PREFILL_ROUNDS)
    reference_prefill = prefills.get("llama.cpp-q8_0")
    if reference:
        print(f"model={label} precision=llama.cpp-q8_0 tok_s={_shown(speeds['llama.cpp-q8_0'], 1)} "
              f"prefill_tok_s={_shown(reference_prefill, 0)}", flush=True)
    for precision, loaded in models.items():
        generate = generate_tok_s(loaded, tokens)
        r = loaded.report
        speed = speeds[precision]
        prefill = prefills[precision]
        print(f"model={label} precision={precision} backend={r.backend.replace(' ', '_')} tok_s={_shown(speed, 1)} "
              f"prefill_tok_s={_shown(prefill, 0)} "
              f"prefill_vs_bf16={_ratio(prefill, prefills['bf16'])} prefill_vs_llama_cpp={_ratio(prefill, reference_prefill)} "
              f"weight_mb={r.weight_bytes / 1e6:.0f} "
              f"linear_vs_bf16={r.linear_bytes / r.linear_bf16_bytes:.2f} vs_bf16={_ratio(speed, speeds['bf16'])} "
              f"vs_llama_cpp={_ratio(speed, speeds.get('llama.cpp-q8_0'))} generate_tok_s={_shown(generate, 1)} "
              f"vs_generate={_ratio(speed, generate)}", flush=True)
    return models


def three_panes(models: list[LoadedModel], tokens: int, label: str) -> None:
    """Merged int8 beside two bf16 parents, all at once: each pane's own tok/s."""
    history = [{"role": "user", "content": BENCH_PROMPT}]
    settings = GenerationSettings(temperature=0.0, max_new_tokens=tokens, min_new_tokens=tokens)
    final = run_side_by_side(models, [history] * len(models), settings)
    panes = " ".join(f"pane{i + 1}_{m.report.precision}_tok_s={r.stats.tokens_per_s:.1f}" for i, (m, r) in enumerate(zip(models, final,
                                                                                                                          strict=True)))
    print(f"model={label} three_panes {panes}", flush=True)


def random_model(label: str, config: PretrainedConfig) -> Path:
    """A random-weight bf16 model of `config` (built offline, cached per machine), with the
    bundled SmolLM2 tokenizer for the prompt (its ids fit these larger vocabularies)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.sources import DEFAULT_MODEL, resolve_model

    folder = cache_root() / "bench" / label
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent))
    model.save_pretrained(work)
    AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL)).save_pretrained(work)
    work.rename(folder)
    return folder


def space_default_model() -> Path:
    """Qwen2.5-0.5B's exact config: the online Space's default size."""
    from transformers import Qwen2Config

    return random_model("qwen2.5-0.5b-shaped", Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643,
        eos_token_id=151645))


def gemma2_and_llama_shaped() -> dict[str, Path]:
    """gemma-2-2b's exact config, and a Llama with the same tensors (hidden 2304, 26 layers,
    8 heads of 256, a tied 256k vocabulary): what Gemma2's blocks cost over Llama's, the
    weights read per token being the same."""
    from transformers import Gemma2Config, LlamaConfig

    same = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                num_key_value_heads=4, head_dim=256, max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True,
                bos_token_id=2, eos_token_id=1, pad_token_id=0)
    return {"gemma2-2b-shaped": random_model("gemma2-2b-shaped", Gemma2Config(
                **same, hidden_activation="gelu_pytorch_tanh", attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                query_pre_attn_scalar=256, sliding_window=4096)),
            "llama-shaped-as-gemma2-2b": random_model("llama-shaped-as-gemma2-2b", LlamaConfig(**same))}


def same_size(tokens: int, anchors: dict[str, Callable[[], float | None]] | None = None) -> None:
    """Decode tok/s of the Gemma2-shaped and Llama-shaped models, per precision, side by
    side in rounds with `anchors` (label -> a run giving tok/s, such as llama.cpp's server
    on the same model: benchmarks/same_size.py). Prefill and generate are left out: a
    2.6B prompt of 1,000 tokens takes minutes on 2 cores."""
    folders, anchors = gemma2_and_llama_shaped(), anchors or {}
    for precision in ("int8", "fp8"):
        models = {label: load_model(str(folder), precision) for label, folder in folders.items()}
        speeds = interleaved_medians({**{label: one_reply(loaded, tokens) for label, loaded in models.items()}, **anchors})
        for label, loaded in models.items():
            anchor = next((a for a in anchors if a.startswith(label)), None)
            versus = f" vs_{anchor.removeprefix(label).strip()}={_ratio(speeds[label], speeds[anchor])}" if anchor else ""
            print(f"model={label} precision={precision} lean={loaded.decoder is not None} "
                  f"tok_s={_shown(speeds[label], 2)} weight_mb={loaded.report.weight_bytes / 1e6:.0f}{versus}", flush=True)
        for anchor in anchors:
            print(f"model={anchor} round={precision} tok_s={_shown(speeds[anchor], 2)}", flush=True)
        print(f"precision={precision} gemma2_vs_llama_shaped={_ratio(speeds['gemma2-2b-shaped'], speeds['llama-shaped-as-gemma2-2b'])}",
              flush=True)
        del models, loaded  # the next precision's pair loads in the memory this pair held


def run_bench(ref: str, tokens: int, space_default: bool, gemma2_shaped: bool = False) -> int:
    # The host class decides which kernels run (core/native.py), so every result carries it.
    print(f"cpu: {describe_cpu()}; C kernels: {chosen_target() or 'off, torch only'}; torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads", flush=True)
    models = bench_model(ref, tokens, "smollm2" if ref.startswith(BUNDLED_PREFIX) else Path(ref).name)
    three_panes([models["int8"], models["bf16"], models["bf16"]], tokens, "smollm2")
    if space_default:
        models = bench_model(str(space_default_model()), min(tokens, 64), "qwen2.5-0.5b-shaped", llama_cpp=False)
        three_panes([models["int8"], models["bf16"], models["bf16"]], min(tokens, 64), "qwen2.5-0.5b-shaped")
    if gemma2_shaped:
        same_size(min(tokens, 32))
    return 0
