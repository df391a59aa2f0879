#!/usr/bin/env python3
"""Allocator comparison: memory given back after a burst, and throughput, for several slotproxy
binaries (built with different allocators) in front of one cluster, in one run.

    python3 benches/allocators.py NAME=PATH [NAME=PATH ...] [--rounds 3] [--requests 200000]

For each binary in turn (one proxy process each, all started up front): the slow-reader burst of
issue 11 (4 clients pipeline 300 GETs of a 1 MB value and read 64 KB every 20 ms for 4 s, then
leave), reporting VmRSS before, peak (VmHWM) and 1 s / 5 s / 15 s after they left; then
`redis-benchmark -c 50 -t get` through each proxy, alternating A B C A B C, median ops/s.
Uses the process and cluster helpers of benches/compare.py; every process is stopped by PID.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as c  # noqa: E402

VALUE = 1 << 20


def slow_reader(port: int, gets: int, seconds: float) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"*2\r\n$3\r\nGET\r\n$8\r\n{mem}big\r\n" * gets)
    s.settimeout(0.2)
    end = time.time() + seconds
    while time.time() < end:
        try:
            s.recv(64 * 1024)
        except socket.timeout:
            pass
        time.sleep(0.02)
    s.close()


def burst(port: int, pid: int) -> dict[str, float]:
    kb = lambda key: c.status_kb(pid, key) / 1024  # noqa: E731
    c.reset_peak_rss(pid)
    out = {"before": kb("VmRSS")}
    readers = [threading.Thread(target=slow_reader, args=(port, 300, 4.0)) for _ in range(4)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    out["peak"] = kb("VmHWM")
    left = time.time()
    for at in (1, 5, 15):
        time.sleep(max(0.0, left + at - time.time()))
        out[f"{at}s"] = kb("VmRSS")
    return out


def get_rps(port: int, requests: int) -> float:
    r = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(requests), "-t", "get", "--csv"],
        capture_output=True, text=True, timeout=c.RUN_TIMEOUT,
    )
    for line in r.stdout.splitlines():
        if line.startswith('"GET"'):
            return float(line.split(",")[1].strip('"'))
    raise RuntimeError(f"no GET line in redis-benchmark output: {r.stdout} {r.stderr}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="+", help="NAME=PATH of a slotproxy binary")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()
    named = [(b.split("=", 1)[0], Path(b.split("=", 1)[1]).resolve()) for b in args.binaries]
    procs = c.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="slotproxy-alloc-"))
    try:
        cluster = c.start_cluster(procs, tmp, named[0][1])
        proxies = []
        for name, path in named:
            d = tmp / name
            d.mkdir()
            p = c.start_proxy(procs, d, path, cluster, 1, "")
            proxies.append((name, p))
        big = "x" * VALUE
        assert c.try_call(proxies[0][1].port, "SET", "{mem}big", big) == "OK"
        mem = {name: burst(p.port, p.pid) for name, p in proxies}
        rps: dict[str, list[float]] = {name: [] for name, _ in proxies}
        for _ in range(args.rounds):
            for name, p in proxies:
                rps[name].append(get_rps(p.port, args.requests))
        print("| binary | RSS before | peak (VmHWM) | 1 s after | 5 s after | 15 s after | GET -c 50 ops/s (median; min..max) |")
        print("|---|---|---|---|---|---|---|")
        for name, _ in proxies:
            m, r = mem[name], rps[name]
            print(f"| {name} | {m['before']:.1f} MB | {m['peak']:.1f} MB | {m['1s']:.1f} MB | {m['5s']:.1f} MB "
                  f"| {m['15s']:.1f} MB | {statistics.median(r):,.0f} ({min(r):,.0f}..{max(r):,.0f}) |")
        return 0
    finally:
        procs.stop_all()
        subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    sys.exit(main())
