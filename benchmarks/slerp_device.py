"""SLERP math on the CPU vs on a CUDA GPU, for one 4096x4096 bf16 pair (a 7B's attention
projection): the median of 5 runs each, after a warm-up. The GPU is timed twice: the
math alone (tensors already there) and with the copies to and from the host that a
merge pays for every chunk it reads from disk. Prints; asserts nothing (the numbers
are checked in tests/test_gpu.py).

Run: `.venv/bin/python benchmarks/slerp_device.py`
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from merging.slerp import slerp

SHAPE = (4096, 4096)
T = 0.5


def median_seconds(run: Callable[[], torch.Tensor], sync: Callable[[], None], repeats: int = 5) -> float:
    run()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    v0, v1 = torch.randn(*SHAPE, generator=g).bfloat16(), torch.randn(*SHAPE, generator=g).bfloat16()
    cpu = median_seconds(lambda: slerp(T, v0, v1).bfloat16(), lambda: None)
    print(f"SLERP t={T} of a {SHAPE[0]}x{SHAPE[1]} bf16 pair, median of 5, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"cpu:                     {cpu * 1e3:8.1f} ms")
    if not torch.cuda.is_available():
        print("cuda:                    not available on this machine (no timing)")
        return
    cuda = torch.device("cuda")
    g0, g1 = v0.to(cuda), v1.to(cuda)
    sync = torch.cuda.synchronize
    math_only = median_seconds(lambda: slerp(T, g0, g1).bfloat16(), sync)
    with_copies = median_seconds(lambda: slerp(T, v0.to(cuda), v1.to(cuda)).bfloat16().cpu(), sync)
    name = torch.cuda.get_device_name(cuda)
    print(f"cuda, math only:         {math_only * 1e3:8.1f} ms  ({cpu / math_only:.0f}x the CPU; {name})")
    print(f"cuda, with host copies:  {with_copies * 1e3:8.1f} ms  ({cpu / with_copies:.1f}x the CPU)")


if __name__ == "__main__":
    main()
