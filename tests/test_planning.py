import pytest

from core.errors import UserError
from merging.config import TRule
from merging.planning import gradient_value, layer_position, t_curve, t_for


def test_lazymergekit_gradient_over_32_layers_matches_the_notes():
    curve = t_curve((TRule((0, 0.5, 0.3, 0.7, 1)),), "model.layers.0.self_attn.q_proj.weight", 32)
    assert curve[0] == 0.0 and curve[31] == 1.0
    assert curve[8] == pytest.approx(0.494, abs=1e-3)
    assert curve[15] == pytest.approx(0.313, abs=1e-3)
    assert curve[24] == pytest.approx(0.729, abs=1e-3)


def test_v_shape_peaks_in_the_middle():
    curve = t_curve((TRule((0, 0.5, 1, 0.5, 0)),), "x", 24)
    assert curve[0] == 0 and curve[-1] == 0 and max(curve) == pytest.approx(1.0, abs=0.05)
    assert curve == pytest.approx(curve[::-1])


def test_single_layer_slice_sits_at_the_end_of_the_gradient():
    assert layer_position(0, 1) == 1.0 and gradient_value((0.2, 0.9), layer_position(0, 1)) == 0.9


def test_first_matching_filter_wins_and_catch_all_catches_the_rest():
    rules = (TRule((0.1,), "self_attn"), TRule((0.2,), "attn"), TRule((0.3,), "mlp"), TRule((0.9,)))
    assert t_for(rules, "model.layers.3.self_attn.k_proj.weight", 0.5) == 0.1
    assert t_for(rules, "model.layers.3.cross_attn.k_proj.weight", 0.5) == 0.2
    assert t_for(rules, "model.layers.3.mlp.up_proj.weight", 0.5) == 0.3
    assert t_for(rules, "model.norm.weight", 0.0) == 0.9


def test_missing_catch_all_is_a_clear_error():
    with pytest.raises(UserError, match="catch-all"):
        t_for((TRule((0.5,), "mlp"),), "model.norm.weight", 0.0)
