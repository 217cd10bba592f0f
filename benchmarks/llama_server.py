"""llama.cpp's own server, the load benchmark's anchor: built once per machine from the
llama.cpp sources that llama-cpp-python's sdist vendors, and run on the bundled model
requantized to Q8_0, with N parallel slots and continuous batching.

    python benchmarks/llama_server.py   # builds it (10-25 minutes on 2 cores), then prints its path

Not a requirement of the app: the benchmark says so and goes on without it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from core.sources import cache_root

VERSION = "0.3.36"  # llama-cpp-python's, whose sdist pins the llama.cpp sources


def build_dir() -> Path:
    return cache_root() / "llama-cpp" / f"server-{VERSION}"


def binary(name: str) -> Path:
    return build_dir() / "build" / "bin" / name


def build(log=print) -> Path:
    """llama-server and llama-quantize, built here unless they are already."""
    if binary("llama-server").exists() and binary("llama-quantize").exists():
        return binary("llama-server")
    root = build_dir()
    root.mkdir(parents=True, exist_ok=True)
    sources = root / "llama.cpp"
    if not sources.exists():
        with tempfile.TemporaryDirectory() as download:
            log(f"downloading llama-cpp-python=={VERSION}'s sdist")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={VERSION}", "-d", download], check=True, capture_output=True)
            archive = next(Path(download).glob("*.tar.gz"))
            with tarfile.open(archive) as tar:
                tar.extractall(download, filter="data")
            shutil.move(next(Path(download).glob("llama_cpp_python-*")) / "vendor" / "llama.cpp", sources)
    log("building llama-server and llama-quantize (10-25 minutes on 2 cores)")
    started = time.perf_counter()
    # Without AMX: on an AVX-512 VM whose CPU lists AMX, its Q8_0 tile kernel (tinygemm_kernel_amx)
    # died with an illegal instruction at the first batch, while torch's AMX GEMM ran there.
    no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    subprocess.run(["cmake", "-S", str(sources), "-B", str(root / "build"), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
                    f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(root / "build"), "--config", "Release", "-j", str(os.cpu_count() or 2),
                    "--target", "llama-server", "llama-quantize"], check=True, capture_output=True)
    log(f"built in {time.perf_counter() - started:.0f} s")
    return binary("llama-server")


def q8_model(gguf: Path) -> Path:
    """`gguf` requantized to Q8_0 (the nearest of llama.cpp's formats to our int8), once."""
    out = build_dir() / f"{gguf.stem}.Q8_0.gguf"
    if not out.exists():
        work = out.with_suffix(".partial")
        subprocess.run([str(binary("llama-quantize")), "--allow-requantize", str(gguf), str(work), "Q8_0"], check=True,
                       capture_output=True)
        work.rename(out)
    return out


@contextlib.contextmanager
def server(gguf: Path, slots: int, context_per_slot: int = 4096, threads: int | None = None) -> Iterator[str]:
    """llama-server on `gguf` with `slots` parallel slots (continuous batching is its
    default); yields its base URL once it answers /health."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threads = threads or os.cpu_count() or 2
    log = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in the finally below; its log, read only when it fails: a pipe nobody read filled up and blocked it
    process = subprocess.Popen([str(build()), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                                "-np", str(slots), "-c", str(slots * context_per_slot), "-t", str(threads), "-tb", str(threads),
                                "--cont-batching", "--jinja"], stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"llama-server exited: {log.read().decode()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


if __name__ == "__main__":
    print(build())
