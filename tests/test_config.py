import pytest

from core.errors import UserError
from merging.config import TRule, parse_config
from testkit.pairs import SEED_CONFIG

# The seed config: the LazyMergekit model card's YAML, as users paste it.
LAZY_MERGEKIT = SEED_CONFIG.format(a="OpenPipe/mistral-ft-optimized-1218", b="mlabonne/NeuralHermes-2.5-Mistral-7B", n=32)


def test_lazymergekit_config_parses():
    c = parse_config(LAZY_MERGEKIT)
    assert c.base_model == "OpenPipe/mistral-ft-optimized-1218"
    assert c.other_model == "mlabonne/NeuralHermes-2.5-Mistral-7B"
    assert c.t_rules == (TRule((0, 0.5, 0.3, 0.7, 1), "self_attn"), TRule((1, 0.5, 0.7, 0.3, 0), "mlp"), TRule((0.5,)))
    assert c.slices[0].base.layer_range == (0, 32) and c.dtype == "bfloat16"


@pytest.mark.parametrize("text", [
    LAZY_MERGEKIT,
    "models: [{model: a}, {model: b}]\nmerge_method: slerp\nbase_model: b\nparameters: {t: [0, 0.5, 1, 0.5, 0]}\n"
    "dtype: float16\nout_dtype: bfloat16\ntokenizer_source: base\nchat_template: chatml\n",
    "slices:\n- sources: [{model: m, layer_range: [0, 24]}, {model: m, layer_range: [0, 24]}]\n"
    "merge_method: slerp\nbase_model: m\nparameters: {t: 0.5}\n",
])
def test_round_trip(text):
    c = parse_config(text)
    again = parse_config(c.to_yaml())
    assert again == c
    assert again.to_yaml() == c.to_yaml()


def test_models_form_picks_the_other_model_and_self_merge_is_allowed():
    c = parse_config("models: [{model: a}, {model: b}]\nmerge_method: slerp\nbase_model: b\nparameters: {t: 0.3}")
    assert c.models == ("b", "a") and c.slices is None
    same = parse_config("models: [{model: a}, {model: a}]\nmerge_method: slerp\nbase_model: a\nparameters: {t: 0.3}")
    assert same.models == ("a", "a")


@pytest.mark.parametrize("text, field", [
    ("merge_method: ties\nmodels: [{model: a}, {model: b}]\nbase_model: a\nparameters: {t: 0.5}", "merge_method"),
    ("merge_method: slerp\nmodels: [{model: a}, {model: b}]\nbase_model: c\nparameters: {t: 0.5}", "base_model"),
    ("merge_method: slerp\nmodels: [{model: a}, {model: b}]\nbase_model: a\nparameters: {t: 1.5}", "parameters.t"),
    ("merge_method: slerp\nmodels: [{model: a}, {model: b}]\nbase_model: a\nparameters: {t: []}", "parameters.t"),
    ("merge_method: slerp\nmodels: [{model: a}, {model: b}]\nbase_model: a\nparameters: {t: [0, x]}", "parameters.t"),
    ("merge_method: slerp\nmodels: [{model: a}, {model: b}]\nbase_model: a", "parameters.t"),
    ("merge_method: slerp\nmodels: [{model: a}, {model: b}, {model: c}]\nbase_model: a\nparameters: {t: 0.5}", "models"),
    ("merge_method: slerp\nmodels: [{model: a}, {model: b}]\nbase_model: a\nparameters: {t: 0.5}\ndtype: int4", "dtype"),
    ("merge_method: slerp\nslices: [{sources: [{model: a, layer_range: [0, 4]}, {model: b, layer_range: [0, 3]}]}]\n"
     "base_model: a\nparameters: {t: 0.5}", "slices[0].sources"),
    ("merge_method: slerp\nslices: [{sources: [{model: a, layer_range: [4, 2]}, {model: b, layer_range: [4, 2]}]}]\n"
     "base_model: a\nparameters: {t: 0.5}", "layer_range"),
    ("merge_method: slerp\n  models: [: oops", "config"),
    ("- just\n- a list", "config"),
])
def test_bad_configs_name_the_field_in_one_line(text, field):
    with pytest.raises(UserError) as info:
        parse_config(text)
    message = str(info.value)
    assert field in info.value.field and "\n" not in message and " — " in message


def test_unknown_keys_are_warned_about_not_silently_dropped():
    c = parse_config("models: [{model: a}, {model: b}]\nmerge_method: slerp\nbase_model: a\nparameters: {t: 0.5}\nparamters: 1")
    assert c.warnings == ("unknown key 'paramters' ignored",)
