"""How long one inventory of a fake 8-GPU MIG node takes, and how much memory an idle agent holds.

Run: ``.venv/bin/python bench/bench_inventory.py [--fixture hgx-h100-mig] [--runs 200]``

Prints, for the fixture's node:

- NVML only: ``NvidiaCollector.collect()`` over the fake NVML (8 GPUs, 4 MIG slices, the
  NVLink/PCIe topology reused between passes as in production), cold and warm;
- full: ``collect(load_collectors(fake=...))`` (host, NVIDIA, and the vendor plugins the
  fixture has no devices for), and this machine's real host collector on its own;
- RSS of a fresh process that has imported the agent's inventory and built the
  collectors, then sits idle: once for this machine's collectors, once over the fixture.

Targets: an inventory under 20 ms, an idle agent under 60 MiB.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.collectors.host import HostCollector  # noqa: E402
from agents.collectors.nvidia import NvidiaCollector  # noqa: E402
from agents.fake import FakeNvml, load_fixture  # noqa: E402
from agents.inventory import close_collectors, collect, load_collectors  # noqa: E402

TARGET_MS = 20.0
TARGET_RSS_MIB = 60.0

_IDLE_AGENT = """
import sys, time, psutil
sys.path.insert(0, {root!r})
from agents.inventory import load_collectors
collectors = load_collectors(fake={fake!r})
time.sleep(0.5)
print(psutil.Process().memory_info().rss / 2**20)
"""


def timings_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and 95th percentile of ``runs`` calls, in milliseconds."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def idle_rss_mib(fake: str | None) -> float:
    code = _IDLE_AGENT.format(root=str(Path(__file__).resolve().parents[1]), fake=fake)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def verdict(value: float, target: float) -> str:
    return "ok" if value < target else f"MISSED (target {target:g})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixture", default="hgx-h100-mig")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    fixture = load_fixture(args.fixture)

    nvidia = NvidiaCollector(FakeNvml(fixture), sysfs_root=None)
    started = time.perf_counter()
    first = nvidia.collect()
    cold_ms = (time.perf_counter() - started) * 1000
    devices = len(first.devices)
    nvml_median, nvml_p95 = timings_ms(nvidia.collect, args.runs)
    nvidia.close()

    collectors = load_collectors(fake=args.fixture)
    collect(collectors)
    full_median, full_p95 = timings_ms(lambda: collect(collectors), args.runs)
    close_collectors(collectors)
    host_median, host_p95 = timings_ms(HostCollector().collect, args.runs)

    rss_real = idle_rss_mib(None)
    rss_fake = idle_rss_mib(args.fixture)

    print(f"inventory of {args.fixture} ({devices} NVIDIA devices), {args.runs} runs")
    print(f"  NVML only, first pass (reads topology): {cold_ms:7.2f} ms")
    print(f"  NVML only:            median {nvml_median:6.2f} ms   p95 {nvml_p95:6.2f} ms   "
          f"{verdict(nvml_p95, TARGET_MS)}")
    print(f"  full (host + NVML + plugins): median {full_median:6.2f} ms   p95 {full_p95:6.2f} ms   "
          f"{verdict(full_p95, TARGET_MS)}")
    print(f"  this machine's host collector: median {host_median:6.2f} ms   p95 {host_p95:6.2f} ms")
    print("idle agent process (imported, collectors built)")
    print(f"  this machine's collectors: RSS {rss_real:6.1f} MiB   {verdict(rss_real, TARGET_RSS_MIB)}")
    print(f"  fake {args.fixture}: RSS {rss_fake:6.1f} MiB   {verdict(rss_fake, TARGET_RSS_MIB)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
