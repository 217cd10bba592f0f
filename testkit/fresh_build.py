"""What a new machine builds once (the bundled model's conversion, the C kernels and the demo
parent), built from scratch in an empty cache by a process of its own at low priority.
The test suite starts it when it collects a test that needs it, runs the other tests
meanwhile, and waits for it there: the build keeps both cores busy for minutes, while the
rest of the suite leaves about half of the machine idle (browser waits, throttled
downloads). Run as `python -m testkit.fresh_build CACHE RESULT_JSON`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

NICENESS = 10  # the foreground tests, some of them timed by a browser, keep the cores they need
# Its threads sleep at a barrier instead of spinning: beside the foreground tests on 2 cores, a
# spinning thread burns the time its sibling needed. Measured here (AVX2, 2 cores), a SmolLM2
# training step at nice 10 beside a decoding reply: 15.7 s a step and 61.7 tok/s for the reply,
# against 20.0 s and 53.8 tok/s spinning; alone, 5.13 s against 4.90 s.
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}


@dataclass
class BuildResult:
    seconds: dict[str, float]  # "conversion", "kernels", "demo parent"
    kernels: dict[str, bool]  # library -> built and loaded
    stages: list[tuple[str, int, int]] = field(default_factory=list)  # the demo parent's progress reports
    demo_parent: Path = Path()  # its folder, relative to the cache it was built in


class BackgroundBuild:
    """The build process, started at once; `result()` waits for it."""

    def __init__(self, cache: Path):
        self.cache, self.out = cache, cache / "result.json"
        self.log = (cache / "build.log").open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "testkit.fresh_build", str(cache), str(self.out)],
                                        stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **WAIT_POLICY})

    def result(self) -> BuildResult:
        code = self.process.wait()
        self.log.close()
        if code != 0:
            raise RuntimeError(f"the fresh build failed (exit {code}):\n{(self.cache / 'build.log').read_text()[-3000:]}")
        data = json.loads(self.out.read_text())
        return BuildResult(data["seconds"], data["kernels"], [tuple(s) for s in data["stages"]], Path(data["demo_parent"]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def build(cache: Path) -> BuildResult:
    os.environ["SLERP_ARENA_CACHE"] = str(cache)
    from core.sources import DEFAULT_MODEL, cache_root, resolve_model
    from evaluation.demo_parent import build_demo_parent
    from inference import cpu_kernels
    from merging import slerp_kernel

    started = time.perf_counter()
    resolve_model(DEFAULT_MODEL)
    converted = time.perf_counter()
    kernels = {"cpu": cpu_kernels.build_library() is not None, "slerp": slerp_kernel.build_library() is not None}
    compiled = time.perf_counter()
    result = BuildResult({"conversion": converted - started, "kernels": compiled - converted}, kernels)
    folder = build_demo_parent(on_progress=lambda stage, done, total: result.stages.append((stage, done, total)))
    result.seconds["demo parent"] = time.perf_counter() - compiled
    result.demo_parent = folder.relative_to(cache_root())
    return result


if __name__ == "__main__":
    os.nice(NICENESS)
    Path(sys.argv[2]).write_text(json.dumps(asdict(build(Path(sys.argv[1]))), default=str))
