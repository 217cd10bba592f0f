"""The model card: Hub ids only as base_model, and sections replaced, not appended twice."""

import yaml

from merging.config import parse_config
from merging.model_card import model_card, replace_section


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_base_model_lists_hub_ids_only(tmp_path):
    config = parse_config(f"models: [{{model: bundled:SmolLM2-135M-Instruct}}, {{model: {tmp_path}}}]\nmerge_method: slerp\n"
                          "base_model: bundled:SmolLM2-135M-Instruct\nparameters: {t: 0.5}\n")
    card = model_card(config, "smol", [])
    assert front_matter(card)["base_model"] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    hub = parse_config("models: [{model: Qwen/Qwen2.5-0.5B-Instruct}, {model: Qwen/Qwen2.5-0.5B}]\nmerge_method: slerp\n"
                       "base_model: Qwen/Qwen2.5-0.5B-Instruct\nparameters: {t: 0.5}\n")
    assert front_matter(model_card(hub, "q", []))["base_model"] == ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B"]
    local = parse_config(f"models: [{{model: {tmp_path}}}, {{model: {tmp_path}}}]\nmerge_method: slerp\n"
                         f"base_model: {tmp_path}\nparameters: {{t: 0.5}}\n")
    assert "base_model" not in front_matter(model_card(local, "l", []))


def test_a_section_is_replaced_not_appended_twice():
    card = "---\ntags: [merge]\n---\n\n# m\n"
    once = replace_section(card, "arena", "## Arena\n\n60%")
    twice = replace_section(once, "arena", "## Arena\n\n70%")
    assert twice.count("## Arena") == 1 and "70%" in twice and "60%" not in twice and twice.startswith(card.rstrip())


def test_the_card_says_what_mergekit_needs_to_run_its_config(tmp_path):
    """A card had said "runs unchanged with mergekit-yaml" of a config naming bundled: models."""
    bundled = parse_config(f"models: [{{model: bundled:SmolLM2-135M-Instruct}}, {{model: {tmp_path}}}]\nmerge_method: slerp\n"
                           "base_model: bundled:SmolLM2-135M-Instruct\nparameters: {t: 0.5}\n")
    card = model_card(bundled, "smol", [])
    assert "runs unchanged" not in card
    assert "runs with `mergekit-yaml` after replacing `bundled:SmolLM2-135M-Instruct` with `HuggingFaceTB/SmolLM2-135M-Instruct`" in card
    hub = parse_config("models: [{model: Qwen/Qwen2.5-0.5B-Instruct}, {model: Qwen/Qwen2.5-0.5B}]\nmerge_method: slerp\n"
                       "base_model: Qwen/Qwen2.5-0.5B-Instruct\nparameters: {t: 0.5}\n")
    assert "the configuration below runs unchanged with `mergekit-yaml`" in model_card(hub, "q", [])
