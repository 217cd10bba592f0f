"""Hub parents: plan from headers, merge while the bytes arrive, against the download alone.

Two Llama-shaped parents of about 1 GB each (five shards each), served by the
Hub-protocol server (testkit/hub_server.py) in a child process at one fixed bandwidth
that all its connections share. Each step runs as a child process with a Hugging Face
cache of its own, so nothing is cached between them:

1. plan: `python -m merging CONFIG OUT --dry-run` of the two Hub ids (headers only);
2. merge with overlap: `python -m merging CONFIG OUT`, downloading while merging;
3. download alone: huggingface_hub's snapshot_download of both parents at once, the
   physical floor of any merge from the Hub at this bandwidth;
4. download, then merge: step 3's cache merged afterwards (what the app did before).

Steps 2 to 4 run twice, interleaved, and the best of each is printed. Each wall is a whole
process; the ratios are also given after each process's imports (torch for a merge,
huggingface_hub for a download), which the app has paid once at start.

Run: `python benchmarks/hub_merge.py [--mb-per-s 64]`. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from core.cpu import describe_cpu
from core.places import ROOT
from core.sources import cache_root
from testkit.measure import run_timed
from testkit.pairs import SEED_CONFIG, Shape, build_pair, folder_bytes

SHAPE = Shape(2048, 8, 5632, 32000, 16, 4, 2 * 10**8)  # about 0.5B parameters, 1 GB of bf16 per parent
SERVER = """
import json, sys
from testkit.hub_server import HubServer
hub = HubServer(bytes_per_s=float(sys.argv[1])).__enter__()
hub.add("bench/parent-a", sys.argv[2])
hub.add("bench/parent-b", sys.argv[3])
print(hub.url, flush=True)
for line in sys.stdin:  # each line asks for the bytes sent since the last one
    print(json.dumps(hub.sent), flush=True)
    hub.sent.clear()
"""
DOWNLOAD = """
import threading
from huggingface_hub import snapshot_download
threads = [threading.Thread(target=snapshot_download, args=(repo,)) for repo in ("bench/parent-a", "bench/parent-b")]
for t in threads: t.start()
for t in threads: t.join()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb-per-s", type=float, default=64.0, help="the server's bandwidth, shared by all connections")
    args = parser.parse_args()
    work = cache_root() / "bench-hub"
    a, b = build_pair(work, SHAPE)
    parents = folder_bytes(a) + folder_bytes(b)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.mb_per_s * 1e6), str(a), str(b)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()

    def sent() -> dict[str, int]:
        server.stdin.write("\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())

    with tempfile.TemporaryDirectory(dir=work) as scratch:
        config = Path(scratch) / "hub.yml"
        config.write_text(SEED_CONFIG.format(a="bench/parent-a", b="bench/parent-b", n=SHAPE.layers))

        def step(name: str, argv: list[str]) -> tuple[float, float, float]:
            env = {"HF_ENDPOINT": url, "HF_HOME": str(Path(scratch) / name), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
                   "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
            return run_timed(argv, env=env)

        # The test server hashes each file for its ETag at the first request (the Hub keeps them precomputed).
        step("warm", ["merging", str(config), str(Path(scratch) / "out-warm"), "--dry-run"])
        sent()
        plan_s, _, _ = step("plan", ["merging", str(config), str(Path(scratch) / "out-plan"), "--dry-run"])
        plan_bytes = sum(n for path, n in sent().items() if path.endswith(".safetensors"))
        merge_imports, _, _ = step("imports", ["-c", "import merging.__main__, merging.dry_run"])
        download_imports, _, _ = step("imports", ["-c", "from huggingface_hub import snapshot_download"])
        # Interleaved, best of two each: the machine's other work moves single runs.
        overlaps, downloads, thens = [], [], []
        for i in range(2):
            overlaps.append(step(f"overlap-{i}", ["merging", str(config), str(Path(scratch) / f"out-overlap-{i}")]))
            downloads.append(step(f"then-{i}", ["-c", DOWNLOAD]))
            sent()
            thens.append(step(f"then-{i}", ["merging", str(config), str(Path(scratch) / f"out-then-{i}")]))
            after = sum(n for path, n in sent().items() if path.endswith(".safetensors"))
        (overlap_s, overlap_rss, overlap_cpu), (download_s, _, download_cpu) = min(overlaps), min(downloads)
        merge_s, merge_rss, merge_cpu = min(thens)
        identical = all((Path(scratch) / "out-overlap-0" / f.name).read_bytes() == f.read_bytes()
                        for f in (Path(scratch) / "out-then-0").glob("*.safetensors"))
    server.terminate()
    print(f"host: {describe_cpu()}; Hub-protocol server at {args.mb_per_s:.0f} MB/s; parents {parents / 1e9:.2f} GB "
          f"({SHAPE.layers} layers, hidden {SHAPE.hidden}, bf16)")
    print(f"plan from headers          {plan_s:6.2f} s   ({plan_s - merge_imports:.2f} s after the imports)   weight bytes fetched "
          f"{plan_bytes:,} ({100 * plan_bytes / parents:.4f}% of the parents)")
    floor = download_s - download_imports
    print(f"merge with overlap         {overlap_s:6.2f} s   peak RSS {overlap_rss:4.0f} MB   {overlap_s / download_s:.2f}x the "
          f"download alone; after each one's imports: {overlap_s - merge_imports:.2f} s, {(overlap_s - merge_imports) / floor:.2f}x; "
          f"CPU {overlap_cpu:.1f} s")
    print(f"download alone             {download_s:6.2f} s   (snapshot_download of both at once: the floor, "
          f"{parents / download_s / 1e6:.0f} MB/s; {floor:.2f} s after its imports; CPU {download_cpu:.1f} s)")
    print(f"download, then merge       {download_s + merge_s:6.2f} s   peak RSS {merge_rss:4.0f} MB (the merge's)   "
          f"{(download_s + merge_s) / download_s:.2f}x the download alone; after the imports: "
          f"{download_s + merge_s - download_imports - merge_imports:.2f} s, "
          f"{(download_s + merge_s - download_imports - merge_imports) / floor:.2f}x; CPU {download_cpu + merge_cpu:.1f} s "
          f"(its merge fetched {after:,} weight bytes)")
    print(f"outputs byte-identical: {identical}")


if __name__ == "__main__":
    main()
