import math

import numpy as np
import pytest
import torch

from core.errors import UserError
from merging import slerp_kernel
from merging.slerp import PairStats, coefficients, combine, combine_into, math_device, slerp
from testkit.reference import bf16_ulps, reference_slerp


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 48, generator=g).bfloat16(), torch.randn(64, 48, generator=g).bfloat16()


def test_t0_is_base_and_t1_is_other_bit_exact(pair):
    v0, v1 = pair
    assert torch.equal(slerp(0.0, v0, v1).bfloat16(), v0)
    assert torch.equal(slerp(1.0, v0, v1).bfloat16(), v1)


def test_identical_parents_give_the_parent(pair):
    v0, _ = pair
    for t in (0.1, 0.3, 0.5, 0.77):
        assert torch.equal(slerp(t, v0, v0.clone()).bfloat16(), v0)


def test_orthogonal_unit_vectors_at_half_follow_the_arc():
    result = slerp(0.5, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    expected = math.sqrt(0.5)
    assert torch.allclose(result, torch.tensor([expected, expected]), atol=1e-7)
    assert math.isclose(float(result.norm()), 1.0, abs_tol=1e-6)  # lerp would give 0.707


def test_near_parallel_tensors_take_the_lerp_path():
    v0 = torch.linspace(1, 2, 1000)
    v1 = v0 + 0.001 * torch.sin(torch.arange(1000.0))
    stats = PairStats()
    stats.add(v0, v1)
    c = coefficients(stats, 0.3)
    assert c.lerp and c.theta_degrees < 2.0
    assert torch.allclose(combine(c, v0, v1), 0.7 * v0 + 0.3 * v1, atol=1e-6)


def test_zero_norm_tensor_is_not_normalized():
    # mergekit normalizes only where norm > eps: a zero tensor has dot 0, so θ = 90°.
    v1 = torch.tensor([3.0, 4.0])
    result = slerp(0.25, torch.zeros(2), v1)
    assert torch.allclose(result, math.sin(0.25 * math.pi / 2) * v1, atol=1e-6)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.25, 0.5, 0.73, 0.9, 1.0])
def test_matches_the_mergekit_reference_within_one_bf16_ulp(pair, t):
    v0, v1 = pair
    ours = slerp(t, v0, v1).bfloat16()
    ref = torch.from_numpy(reference_slerp(t, v0.float().numpy(), v1.float().numpy()))
    assert bf16_ulps(ours, ref, parents_scale=float(torch.cat([v0, v1]).abs().max())) <= 1.0


def test_chunked_statistics_equal_whole_tensor_statistics(pair):
    v0, v1 = (v.reshape(-1) for v in pair)
    whole, chunked = PairStats(), PairStats()
    whole.add(v0, v1)
    for start in range(0, v0.numel(), 1000):
        chunked.add(v0[start:start + 1000], v1[start:start + 1000])
    a, b = coefficients(whole, 0.4), coefficients(chunked, 0.4)
    assert math.isclose(a.s0, b.s0, rel_tol=1e-6) and math.isclose(a.s1, b.s1, rel_tol=1e-6)


def test_angle_between_parents_is_reported_in_degrees():
    stats = PairStats()
    stats.add(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert math.isclose(coefficients(stats, 0.5).theta_degrees, 45.0, abs_tol=1e-6)
    np.testing.assert_allclose(slerp(0.0, torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])).numpy(), [1.0, 0.0])


def test_the_math_runs_on_the_cpu_unless_an_available_gpu_is_asked_for():
    assert math_device(None) == math_device("cpu") == torch.device("cpu")
    for name in ("mps", "tpu"):
        with pytest.raises(UserError, match="not a device the merge runs on"):
            math_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            math_device("cuda")


def test_the_c_passes_compute_what_the_torch_passes_compute(kernel_target):
    """merging/slerp_kernel.py on a 1M + 37 element bf16 pair (a tail after the vector loop):
    the three sums within 1e-6 of float64 ones (torch's float32 dot is further off), the
    blend within one bf16 ulp of the torch blend and equal on 99% of the elements (99.8%
    measured: the coefficients differ in the last float32 bits), and bit-identical to it
    given the same coefficients."""
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(2**20 + 37, generator=generator).bfloat16()
    b = (0.6 * a.float() + 0.8 * torch.randn(a.numel(), generator=generator)).bfloat16()
    exact = [float(x.double() @ y.double()) for x, y in ((a, a), (b, b), (a, b))]
    in_c = PairStats()
    in_c.include(*slerp_kernel.sums(a, b))
    assert all(abs(got - want) <= 1e-6 * abs(want) for got, want in zip((in_c.sq0, in_c.sq1, in_c.dot), exact, strict=True))
    in_torch = PairStats()
    in_torch.add(a.float(), b.float())
    for t in (0.1, 0.5, 0.9):
        c = coefficients(in_c, t)
        out = torch.empty_like(a)
        slerp_kernel.combine(a, b, c.s0, c.s1, out)
        reference = combine_into(coefficients(in_torch, t), a.float(), b.float()).bfloat16()
        assert bf16_ulps(out, reference, float(torch.cat([a, b]).float().abs().max())) <= 1.0
        assert float((out == reference).float().mean()) > 0.99
        same_coefficients = combine_into(c, a.float(), b.float()).bfloat16()
        assert torch.equal(out, same_coefficients)  # the blend itself: two rounded products, a rounded sum, one narrowing
