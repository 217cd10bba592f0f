"""The model card: Hub ids only as base_model, and sections replaced, not appended twice."""

import yaml

from core.architectures import family_of
from merging.config import parse_config
from merging.model_card import model_card, replace_section

LLAMA = family_of("llama")


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_base_model_lists_hub_ids_only(tmp_path):
    config = parse_config(f"models: [{{model: bundled:SmolLM2-135M-Instruct}}, {{model: {tmp_path}}}]\nmerge_method: slerp\n"
                          "base_model: bundled:SmolLM2-135M-Instruct\nparameters: {t: 0.5}\n")
    card = model_card(config, "smol", [], LLAMA)
    assert front_matter(card)["base_model"] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    hub = parse_config("models: [{model: Qwen/Qwen2.5-0.5B-Instruct}, {model: Qwen/Qwen2.5-0.5B}]\nmerge_method: slerp\n"
                       "base_model: Qwen/Qwen2.5-0.5B-Instruct\nparameters: {t: 0.5}\n")
    assert front_matter(model_card(hub, "q", [], LLAMA))["base_model"] == ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B"]
    local = parse_config(f"models: [{{model: {tmp_path}}}, {{model: {tmp_path}}}]\nmerge_method: slerp\n"
                         f"base_model: {tmp_path}\nparameters: {{t: 0.5}}\n")
    assert "base_model" not in front_matter(model_card(local, "l", [], LLAMA))


def test_a_section_is_replaced_not_appended_twice():
    card = "---\ntags: [merge]\n---\n\n# m\n"
    once = replace_section(card, "arena", "## Arena\n\n60%")
    twice = replace_section(once, "arena", "## Arena\n\n70%")
    assert twice.count("## Arena") == 1 and "70%" in twice and "60%" not in twice and twice.startswith(card.rstrip())


def test_the_card_says_what_mergekit_needs_to_run_its_config(tmp_path):
    """A card had said "runs unchanged with mergekit-yaml" of a config naming bundled: models."""
    bundled = parse_config(f"models: [{{model: bundled:SmolLM2-135M-Instruct}}, {{model: {tmp_path}}}]\nmerge_method: slerp\n"
                           "base_model: bundled:SmolLM2-135M-Instruct\nparameters: {t: 0.5}\n")
    card = model_card(bundled, "smol", [], LLAMA)
    assert "runs unchanged" not in card
    assert "runs with `mergekit-yaml` after replacing `bundled:SmolLM2-135M-Instruct` with `HuggingFaceTB/SmolLM2-135M-Instruct`" in card
    hub = parse_config("models: [{model: Qwen/Qwen2.5-0.5B-Instruct}, {model: Qwen/Qwen2.5-0.5B}]\nmerge_method: slerp\n"
                       "base_model: Qwen/Qwen2.5-0.5B-Instruct\nparameters: {t: 0.5}\n")
    assert "the configuration below runs unchanged with `mergekit-yaml`" in model_card(hub, "q", [], LLAMA)


def test_the_card_names_the_family_and_how_the_arena_chats_with_it(tiny_models, tmp_path):
    """A merge of two Gemma2 models: its card says so, that the lean loop runs it, and that
    its template folds a system prompt into the first user message."""
    from merging.merge import run_merge

    a, b = tiny_models("gemma2", 1), tiny_models("gemma2", 2)
    config = parse_config(f"models: [{{model: {a}}}, {{model: {b}}}]\nmerge_method: slerp\nbase_model: {a}\nparameters: {{t: 0.5}}\n")
    card = (run_merge(config, tmp_path / "out").output_dir / "README.md").read_text()
    assert "Architecture: Gemma2. Slerp Arena chats with it on its lean decode loop" in card
    assert "a system prompt is folded into the first user message" in card
    assert "through transformers' generate" in model_card(config, "q", [], family_of("qwen3"))
