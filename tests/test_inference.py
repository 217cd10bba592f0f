import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from helpers import streamed_together

from core.errors import UserError
from core.places import ROOT
from inference import (
    FALLBACK_TEMPLATE,
    GenerationSettings,
    ModelCache,
    build_prompt,
    cpu_kernels,
    generate_reply,
    load_model,
    run_side_by_side,
    stream_side_by_side,
)
from inference.cpu_kernels import bf16_linear_cpu, fp8_linear_cpu, int8_linear_cpu
from inference.generation import FRAME_S
from inference.quantize import Int8Linear
from inference.sharing import Cores, kernel_threads
from testkit.tiny_models import CHATML, GEMMA_LIKE, build_tiny_model

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2 from the bundled GGUF, once per precision for the whole module."""
    loaded = {}

    def get(precision: str):
        if precision not in loaded:
            loaded[precision] = load_model("bundled:SmolLM2-135M-Instruct", precision)
        return loaded[precision]

    return get


def greedy(max_new_tokens: int = 16, **kwargs) -> GenerationSettings:
    return GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens, **kwargs)


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_smollm2_answers_paris_quantized(smollm2, precision):
    loaded = smollm2(precision)
    assert loaded.report.precision == precision
    reply = generate_reply(loaded, QUESTION, greedy(), threading.Event())
    assert not reply.error and "Paris" in reply.text


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_quantized_linear_weights_take_about_half_the_bf16_memory(smollm2, precision):
    report = smollm2(precision).report
    assert report.linear_bytes <= 0.55 * report.linear_bf16_bytes
    assert "lm_head included, is quantized" in report.note


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # qwen2: tied embeddings, so lm_head gets its own copy
@pytest.mark.parametrize("precision, tolerance", [("int8", 0.05), ("fp8", 0.08)])
def test_quantized_logits_stay_close_to_bf16(tiny_models, arch, precision, tolerance):
    """Relative L2 error of the logits against bf16 (lm_head quantized too): int8 < 5%, fp8 (3 mantissa bits) < 8%."""
    folder = tiny_models(arch, 7)
    ids = torch.tensor([[1, 5, 9, 42, 77, 100, 3]])
    with torch.inference_mode():
        reference = load_model(str(folder), "bf16").model(ids).logits.float()
        quantized = load_model(str(folder), precision).model(ids).logits.float()
    error = float((quantized - reference).norm() / reference.norm())
    assert error < tolerance
    assert error > 0  # the weights really were quantized


@pytest.mark.parametrize("width", [1, 64])  # 64: the vectorized loop; 1: the scalar tail
def test_fp8_cpu_kernel_decodes_every_code_exactly(kernel_target, width):
    codes = torch.arange(256, dtype=torch.uint8)
    codes = codes[~torch.isnan(codes.view(torch.float8_e4m3fn).float())]  # 0x7F / 0xFF are NaN
    weight = torch.zeros(len(codes), width, dtype=torch.uint8)
    weight[:, -1] = codes
    weight = weight.view(torch.float8_e4m3fn)
    x = torch.zeros(1, width, dtype=torch.bfloat16)
    x[0, -1] = 1
    y = fp8_linear_cpu(x, weight, torch.ones(weight.shape[0]))
    assert torch.equal(y.float().reshape(-1), codes.view(torch.float8_e4m3fn).float())  # every e4m3 value is a bf16 value
    wide, factor = cpu_kernels._wide("fp8", weight, torch.float32)  # what a prompt's product widens to
    assert torch.equal(wide * factor, weight.float())


# 100: a tail after the 32-wide loop (torch's own int8 matmul crashes on that width);
# 600: a block of 256 cut short; 9 rows: above the kernel's, torch's path.
@pytest.mark.parametrize("rows, width", [(1, 576), (3, 576), (8, 576), (9, 576), (1, 100), (8, 100), (1, 600)])
def test_int8_cpu_kernel_is_the_exact_product_rounded_once(kernel_target, rows, width):
    """Within bf16's rounding (2^-8 relative) of the float64 product, plus what the
    kernel's rounding of the activations to int16 per block of 256 can move it: half a
    step (block max / 32767) times the block's |weights|."""
    torch.manual_seed(rows * width)
    weight = torch.randint(-127, 128, (300, width), dtype=torch.int8)
    scale = (torch.rand(300) / 50).bfloat16()
    x = torch.randn(rows, width).bfloat16()
    exact = (x.double() @ weight.double().T) * scale.double()
    y = int8_linear_cpu(x, weight, scale).double()
    step = torch.zeros(rows, width, dtype=torch.float64)
    for start in range(0, width, 256):
        step[:, start:start + 256] = x[:, start:start + 256].double().abs().amax(dim=1, keepdim=True) / 32767 / 2
    activation_rounding = (step @ weight.double().abs().T) * scale.double()
    assert bool(((y - exact).abs() <= (exact.abs() + activation_rounding) * 2**-8 + activation_rounding + 1e-6).all())
    assert float((y - exact).norm() / exact.norm()) < 2**-9  # and far from the bound on the whole


@pytest.mark.parametrize("kind", ["int8", "fp8", "bf16"])
@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "emulated-bf16"])
def test_a_prompt_sized_product_widens_the_weights_block_by_block(kind, native, monkeypatch):
    """40 rows, as a prompt's prefill: the weights widened 64 output rows at a time (a last
    block cut short) and put through torch's GEMM, in bf16 on a CPU with native bf16 and in
    float32 on one without, the scales folded into the widened weights. Every output is
    within two bf16 roundings of the float64 product, plus float32 sums; in bf16, plus the
    rounding of each scaled weight to bf16, as a bf16 model's own weights are rounded."""
    monkeypatch.setattr(cpu_kernels, "native_bf16", lambda: native)
    monkeypatch.setattr(cpu_kernels, "WIDEN_BLOCK", 64)
    torch.manual_seed(5)
    x = torch.randn(40, 96).bfloat16()
    if kind == "int8":
        weight, scale = torch.randint(-127, 128, (150, 96), dtype=torch.int8), (torch.rand(150) / 50).bfloat16()
        y = int8_linear_cpu(x, weight, scale).double()
    elif kind == "bf16":
        weight, scale = torch.randn(150, 96).bfloat16(), torch.ones(150)
        y = bf16_linear_cpu(x, weight).double()
    else:
        weight, scale = (torch.randn(150, 96) * 100).to(torch.float8_e4m3fn), torch.rand(150) / 50
        y = fp8_linear_cpu(x, weight, scale).double()
    exact = (x.double() @ weight.double().T) * scale.double()
    magnitude = (x.double().abs() @ weight.double().abs().T) * scale.double()
    rounded_weights = 2**-8 if native and kind != "bf16" else 0
    assert bool(((y - exact).abs() <= exact.abs() * 2**-7 + magnitude * (2**-20 + rounded_weights)).all())
    assert float((y - exact).norm() / exact.norm()) < 2**-8


@pytest.mark.parametrize("compute", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_widened_weights_are_the_scaled_weights_rounded_from_float32(math_path, kind, compute):
    """A prompt's weights times their row scales, widened in one pass in C (csrc/widen.c) or
    in torch's passes: every value is the exact product rounded to float32, then to the
    GEMM's dtype, for every int8 value and every e4m3 code (NaN, never stored, aside).
    100 columns: the 8- and 16-wide loops, then tails."""
    torch.manual_seed(7)
    if kind == "int8":
        weight, scale = torch.randint(-128, 128, (300, 100), dtype=torch.int8), (torch.rand(300) / 50).bfloat16()
    else:
        codes = torch.arange(256, dtype=torch.uint8).repeat(118)[:30000].reshape(300, 100)
        codes[(codes & 0x7F) == 0x7F] = 0
        weight, scale = codes.view(torch.float8_e4m3fn), torch.rand(300) / 50
    wide = cpu_kernels._scaled_wide(kind, weight, scale, compute)
    assert wide.dtype == compute
    assert torch.equal(wide, (weight.double() * scale.double()[:, None]).float().to(compute))


# 100: the 64-wide loop, then the 32-wide one, then a tail; 600: a tail after 64-wide only.
@pytest.mark.parametrize("rows, width", [(1, 576), (3, 100), (1, 600), (8, 896)])
def test_bf16_cpu_kernel_is_the_exact_product_rounded_once(kernel_target, rows, width):
    """The bf16 kernel (vdpbf16ps where the target has AVX512-BF16, float FMAs elsewhere):
    every output within bf16's rounding of the float64 product, plus float32 sums."""
    torch.manual_seed(rows * width)
    weight = torch.randn(300, width).bfloat16()
    x = torch.randn(rows, width).bfloat16()
    exact = x.double() @ weight.double().T
    y = bf16_linear_cpu(x, weight).double()
    sums = (x.double().abs() @ weight.double().abs().T) * 2**-20  # float32 accumulation, generously
    assert bool(((y - exact).abs() <= exact.abs() * 2**-8 + sums).all())
    assert float((y - exact).norm() / exact.norm()) < 2**-9


@pytest.mark.parametrize("kind", ["int8", "fp8", "bf16"])
def test_each_row_of_a_many_row_product_is_that_row_alone(kernel_target, kind):
    """The kernels multiply each weight row by up to 8 activation rows at once (groups of
    8, 4, 2 and 1), the weights loaded and widened once per group: each of 15 rows (one
    group of each size) is bit for bit what that row gives alone, as a reply's token must
    be whatever else decodes in its step. 600 wide: a block of 256 cut short, and a tail."""
    torch.manual_seed(15)
    x = torch.randn(15, 600).bfloat16()
    if kind == "int8":
        weight, scale = torch.randint(-127, 128, (200, 600), dtype=torch.int8), (torch.rand(200) / 50).bfloat16()
        product = lambda rows: int8_linear_cpu(rows, weight, scale)  # noqa: E731
    elif kind == "fp8":
        weight, scale = (torch.randn(200, 600) * 8).to(torch.float8_e4m3fn), torch.rand(200) / 50
        product = lambda rows: fp8_linear_cpu(rows, weight, scale)  # noqa: E731
    else:
        weight = torch.randn(200, 600).bfloat16()
        product = lambda rows: bf16_linear_cpu(rows, weight)  # noqa: E731
    together = product(x)
    assert torch.equal(together, torch.cat([product(x[m:m + 1]) for m in range(15)]))
    assert not torch.equal(together[0], together[1])  # rows of their own, not one row's value copied


def test_int8_kernel_keeps_outlier_activations_within_the_weights_own_rounding(kernel_target):
    """LLM activations carry a few channels 100x the rest, and the kernel rounds a block
    to int16 against its largest value. The product's error stays within 10% of the bf16
    output's own rounding (1.007x measured), and the departures from the correctly rounded
    product (1-ulp flips) far below what the int8 weights already cost (1/5 to 1/16
    measured). A NaN in the activations reaches the output, as in torch's product."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 300, bias=False).bfloat16().requires_grad_(False)
    int8 = Int8Linear.of(linear)
    x = torch.randn(1, 576)
    x[0, [3, 300]] = torch.tensor([400.0, -250.0])  # outlier channels in two blocks
    x = x.bfloat16()
    exact = x.double() @ linear.weight.double().T
    dequantized = x.double() @ (int8.weight.double() * int8.scale.double()[:, None]).T
    y = int8(x).double()
    rounded = dequantized.bfloat16().double()
    assert float((y - dequantized).norm()) < 1.1 * float((rounded - dequantized).norm())
    assert float((y - rounded).norm()) < float((dequantized - exact).norm()) / 3
    x[0, 10] = float("nan")
    assert bool(int8(x).isnan().all())


def test_different_chat_templates_give_different_prompts(tmp_path):
    chatml = build_tiny_model(tmp_path / "chatml", "llama", 1, chat_template=CHATML)
    gemma = build_tiny_model(tmp_path / "gemma", "llama", 2, chat_template=GEMMA_LIKE)
    a, b = load_model(str(chatml), "bf16"), load_model(str(gemma), "bf16")
    prompt_a, prompt_b = build_prompt(a.tokenizer, QUESTION), build_prompt(b.tokenizer, QUESTION)
    assert prompt_a.text.endswith("<|im_start|>assistant\n") and "<|im_start|>user" in prompt_a.text
    assert prompt_b.text.endswith("<start_of_turn>model\n")
    # Gemma-like templates reject the system role: it is folded into the first user turn.
    folded = build_prompt(b.tokenizer, QUESTION, system_prompt="Answer in French.")
    assert "<start_of_turn>user\nAnswer in French.\n\nWhat is the capital" in folded.text
    native = build_prompt(a.tokenizer, QUESTION, system_prompt="Answer in French.")
    assert "<|im_start|>system\nAnswer in French.<|im_end|>" in native.text


def test_model_without_template_uses_the_documented_fallback(tmp_path):
    plain = load_model(str(build_tiny_model(tmp_path / "plain", "llama", 1, chat_template=None)), "bf16")
    prompt = build_prompt(plain.tokenizer, QUESTION)
    assert prompt.text == "User: What is the capital of France?\nAssistant:" and "no chat template" in prompt.notice
    assert "Assistant:" in FALLBACK_TEMPLATE


def test_history_is_trimmed_from_the_oldest_turn_with_a_notice(tiny_models):
    loaded = load_model(str(tiny_models("llama", 1)), "bf16")
    long_turn = "hello how are you " * 20
    history = [{"role": "user", "content": long_turn}, {"role": "assistant", "content": long_turn},
               {"role": "user", "content": "second"}, {"role": "assistant", "content": "ok"},
               {"role": "user", "content": "What is the capital of France?"}]
    full = build_prompt(loaded.tokenizer, history, context_length=4096, max_new_tokens=16)
    trimmed = build_prompt(loaded.tokenizer, history, context_length=len(full.input_ids) + 16 - 1, max_new_tokens=16)
    assert long_turn not in trimmed.text and "second" in trimmed.text and "dropped the 1 oldest" in trimmed.notice
    with pytest.raises(UserError, match="shorten the message"):
        build_prompt(loaded.tokenizer, [{"role": "user", "content": long_turn * 5}], context_length=64, max_new_tokens=16)
    with pytest.raises(UserError, match="empty message"):
        build_prompt(loaded.tokenizer, [{"role": "user", "content": "  "}])


def test_stop_ends_generation_mid_reply(tiny_models):
    models = [load_model(str(tiny_models("llama", 1)), "bf16"), load_model(str(tiny_models("llama", 2)), "int8")]
    stop = threading.Event()
    settings = GenerationSettings(temperature=0.0, max_new_tokens=200, min_new_tokens=200)
    final = None
    for final in stream_side_by_side(models, [QUESTION] * 2, settings, stop):
        if any(r.stats.new_tokens >= 3 for r in final):
            stop.set()
    assert all(r.done and r.stopped and r.stats.new_tokens < 200 for r in final)
    assert not [t for t in threading.enumerate() if t.name.startswith("generate ")]


def test_abandoning_the_stream_stops_the_threads(tiny_models):
    model = load_model(str(tiny_models("llama", 1)), "bf16")
    stream = stream_side_by_side([model], [QUESTION], GenerationSettings(temperature=0.0, max_new_tokens=200, min_new_tokens=200))
    next(stream)
    stream.close()  # what Gradio does when the user cancels
    assert not [t for t in threading.enumerate() if t.name.startswith("generate ")]


def test_streaming_interleaves_updates_from_all_models(tiny_models):
    models = [load_model(str(tiny_models("llama", seed)), "bf16") for seed in (1, 2, 3)]
    settings = GenerationSettings(temperature=0.0, max_new_tokens=40, min_new_tokens=40)
    together, snapshot = streamed_together(stream_side_by_side(models, [QUESTION] * 3, settings))
    assert together  # every model had produced text before any model finished: they ran at the same time
    assert all(r.stats.new_tokens == 40 and r.stats.first_token_s is not None for r in snapshot)


def test_a_fast_stream_comes_at_most_one_snapshot_a_frame_and_the_last_holds_every_reply_whole(tiny_models):
    """Tiny models decode far faster than a page redraws: their 2 x 200 tokens come folded
    into at most one snapshot per FRAME_S (each one costs the page's server a render and a
    message per visitor), and the last snapshot holds both replies whole."""
    models = [load_model(str(tiny_models("llama", seed)), "bf16") for seed in (1, 2)]
    settings = GenerationSettings(temperature=0.0, max_new_tokens=200, min_new_tokens=200)
    started = time.monotonic()
    snapshots = list(stream_side_by_side(models, [QUESTION] * 2, settings))
    frames = (time.monotonic() - started) / FRAME_S
    assert len(snapshots) <= frames + 2, (len(snapshots), frames)
    assert all(r.done and r.stats.new_tokens == 200 for r in snapshots[-1])
    assert [r.text for r in snapshots[-1]] == [r.text for r in run_side_by_side(models, [QUESTION] * 2, settings)]


def test_prompts_go_one_at_a_time_in_pane_order_with_every_core_and_tokens_wait_for_them():
    # A's prompt is being prefilled when panes B, C and D start together (places taken in
    # that order); C's thread gets there before B's, and D's reply fails before its prompt.
    # B's prompt goes after A's, C's after B's, each with all of torch's threads, and no
    # pane decodes a token meanwhile, not even A, whose first token is out.
    log, started, release, shared = [], threading.Event(), threading.Event(), Cores()

    def reply(name: str, place: object | None = None) -> None:
        with shared.decoding():
            with shared.prefilling(place):
                log.append((name, "prompt", kernel_threads()))
                started.set()
                if name == "A":
                    release.wait(10)
            shared.before_a_token()
            log.append((name, "token", kernel_threads()))

    first = threading.Thread(target=reply, args=("A",))
    first.start()
    started.wait(10)
    b, c, d = shared.queue_prompts(3)
    threads = [first, threading.Thread(target=reply, args=("C", c)), threading.Thread(target=reply, args=("B", b))]
    for thread in threads[1:]:
        thread.start()
        time.sleep(0.2)
    shared.leave(d)
    release.set()
    for thread in threads:
        thread.join(10)
    cores = torch.get_num_threads()
    assert log[:3] == [("A", "prompt", cores), ("B", "prompt", cores), ("C", "prompt", cores)], log
    assert sorted(name for name, step, _ in log[3:] if step == "token") == ["A", "B", "C"], log
    assert not shared.waiting() and kernel_threads() == cores  # outside any Cores: all of torch's threads


def test_a_worker_forked_while_a_prompt_prefills_decodes_without_waiting_for_it():
    # ZeroGPU forks its GPU worker from the app's process; the thread prefilling there is
    # not in the child, and the child's tokens must not wait for it.
    inside, release, shared = threading.Event(), threading.Event(), Cores()

    def prompt() -> None:
        with shared.prefilling():
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=prompt)
    holder.start()
    inside.wait(10)
    try:
        child = multiprocessing.get_context("fork").Process(target=shared.before_a_token)
        child.start()
        child.join(10)
        hung = child.is_alive()
        if hung:
            child.kill()
            child.join()
    finally:
        release.set()
        holder.join(10)
    assert not hung and child.exitcode == 0


def test_same_seed_same_sample_and_settings_are_shared(tiny_models):
    model = load_model(str(tiny_models("llama", 1)), "bf16")
    settings = GenerationSettings(temperature=1.0, top_p=0.9, top_k=50, max_new_tokens=12, min_new_tokens=12, seed=7)
    a, b = run_side_by_side([model, model], [QUESTION, QUESTION], settings)
    assert a.text == b.text  # two threads, one seed: the same tokens
    other = generate_reply(model, QUESTION, GenerationSettings(temperature=1.0, max_new_tokens=12, min_new_tokens=12, seed=8),
                           threading.Event())
    assert other.text != a.text


def test_a_failing_model_shows_its_error_while_the_others_finish(tiny_models):
    good, bad = load_model(str(tiny_models("llama", 1)), "bf16"), load_model(str(tiny_models("llama", 2)), "bf16")

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    bad.tokenizer.decode = broken  # mid-reply, on every path (the lean loop and generate)
    ok, failed = run_side_by_side([good, bad], [QUESTION] * 2, greedy(8, min_new_tokens=8))
    assert ok.text and not ok.error
    assert "out of memory" in failed.error and failed.done


def test_memory_guard_refuses_an_oversize_load(tiny_models):
    with pytest.raises(UserError, match="needs about .* GB to load"):
        load_model(str(tiny_models("llama", 1)), "bf16", memory_budget=1000)
    with pytest.raises(UserError, match="needs about"):
        ModelCache(memory_budget=1000).get(str(tiny_models("llama", 1)), "int8")


def test_model_cache_loads_each_source_and_precision_once(tiny_models):
    cache = ModelCache()
    ref = str(tiny_models("llama", 1))
    first = cache.get(ref, "int8")
    assert cache.get(ref, "int8") is first
    cache.unload(first)
    bf16 = cache.get(ref, "bf16")
    assert bf16.report.precision == "bf16" and cache.loaded() == [bf16]


def test_bad_precision_and_missing_model_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="precision"):
        load_model("bundled:SmolLM2-135M-Instruct", "int4")
    with pytest.raises(UserError, match="not a directory, a .gguf file or a Hub id"):
        load_model(str(tmp_path / "nothing-here"), "bf16")


def test_cli_chat_prints_each_reply_with_stats(tiny_models):
    done = subprocess.run([sys.executable, "-m", "inference", "chat", str(tiny_models("llama", 1)), str(tiny_models("qwen2", 2)),
                           "--precision", "int8", "--prompt", "hello", "--max-new-tokens", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("=== ") == 2 and done.stdout.count("tok/s") == 2
    in_c = "C kernel for decode, torch GEMM on widened weights" if cpu_kernels.kernel() else "torch._weight_int8pack_mm, torch GEMM"
    assert f"int8 via {in_c}" in done.stderr


def test_incremental_detokenization_equals_decoding_the_whole_reply(smollm2_dir):
    """The streamer decodes a short window per token; the text must be what one decode of
    the whole reply gives, accents, emoji and leading spaces included, at every step."""
    from transformers import AutoTokenizer

    from inference.generation import ReplyStats, _ReplyStreamer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    text = " Café crème à Paris 🇫🇷 — naïve 東京 tokens, spaced   out.\nNew line: ünïcödé 😀!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    seen: list[str] = []
    streamer = _ReplyStreamer(tokenizer, seen.append, 0.0, ReplyStats())
    streamer.put(torch.tensor([[0]]))  # generate hands over the prompt first
    for token in ids:
        streamer.put(torch.tensor([token]))
        full = tokenizer.decode(ids[: streamer.stats.new_tokens], skip_special_tokens=True)
        assert full.startswith(streamer.text)  # never ahead of, never different from the full decode
    streamer.end()
    assert streamer.text == tokenizer.decode(ids, skip_special_tokens=True) and seen[-1] == streamer.text


def test_a_kernel_runs_a_shape_only_where_it_measured_faster_than_torch(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_choices", {})
    slow, quick = (lambda: time.sleep(0.002)), (lambda: None)
    assert not cpu_kernels.kernel_wins(("int8", 1, 300, 576), slow, quick)
    assert cpu_kernels.kernel_wins(("int8", 1, 300, 100), quick, slow)
    assert not cpu_kernels.kernel_wins(("int8", 1, 300, 576), quick, slow)  # measured once per process


EXIT_MID_REPLY = """
import sys
from inference import GenerationSettings, load_model, stream_side_by_side
models = [load_model(sys.argv[1], precision) for precision in ("bf16", "fp32")]
settings = GenerationSettings(temperature=0.0, max_new_tokens=8000, min_new_tokens=8000)
stream = stream_side_by_side(models, [[{"role": "user", "content": "Hi"}]] * 2, settings)  # held, as Gradio holds it
for snapshot in stream:
    if all(reply.stats.new_tokens > 5 for reply in snapshot):
        break
sys.exit(0)  # the stream still running, as when the app is stopped mid-reply
"""


def test_a_process_stopped_mid_reply_exits_cleanly(tiny_models):
    # Without the at-exit stop, the interpreter ended under a reply thread mid-matmul:
    # "terminate called without an active exception", exit 134, in 4 runs of 4.
    model = tiny_models("llama", 1, hidden=256, num_layers=8, max_positions=8192)
    done = subprocess.run([sys.executable, "-c", EXIT_MID_REPLY, str(model)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and "terminate called" not in done.stderr, done.stderr[-2000:]
