#!/usr/bin/env python3
"""Userspace instructions per request in the proxy, counted by callgrind (deterministic: the same
binary, inputs and environment give the same count whatever else the shared machine is doing).

    python3 benches/instructions.py [--slotproxy PATH] [--only 'GET -c 1'] [--top 25]

Starts a six-node cluster (compare.py's helpers), then the proxy (one worker) under
`valgrind --tool=callgrind`, and for each case: a warm-up, the counters zeroed
(`callgrind_control -z`), `redis-benchmark` with a fixed `-n`, a dump; the case's total
instructions (Ir) divided by its requests is the figure. `--top N` also prints the N functions
with the most (self, or with `--inclusive` inclusive) instructions per request for each case (callgrind_annotate).

The proxy runs with its command/connect timeouts at 30 s (under valgrind's pace the 1 s connect
deadline would make the refresher reconnect and poll fast and cost half the run); everything
else is the default (metrics and the proxy's slow log off). Python standard library only;
needs valgrind, redis-server, redis-cli and redis-benchmark.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (the cluster and process helpers)

# (name, redis-benchmark arguments, requests)
CASES = [
    ("GET -c 1", ["-c", "1", "-t", "get"], 10_000),
    ("GET -c 50 -P 1", ["-c", "50", "-t", "get"], 20_000),
    ("SET -c 50 -P 1", ["-c", "50", "-t", "set"], 20_000),
    ("GET -c 50 -P 16", ["-c", "50", "-P", "16", "-t", "get"], 100_000),
    ("SET -c 50 -P 16", ["-c", "50", "-P", "16", "-t", "set"], 100_000),
    ("GET -c 500 -P 1", ["-c", "500", "-t", "get"], 50_000),
    ("GET -c 5000 -P 1", ["-c", "5000", "-t", "get"], 200_000),
    ("MSET 10 slots -c 50 -P 16", ["-c", "50", "-P", "16", *compare.mset_args(10, False)], 20_000),
]


def totals(path: Path) -> dict[str, int]:
    """The dump's event totals by name (Ir; with the cache simulation also Dr, D1mr, DLmr, ...)."""
    events: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        if line.startswith("summary:") or line.startswith("totals:"):
            return dict(zip(events, map(int, line.split()[1:])))
    raise RuntimeError(f"no totals in {path}")


def top(path: Path, requests: int, n: int, inclusive: bool) -> str:
    r = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", f"--inclusive={'yes' if inclusive else 'no'}", str(path)],
                       capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].replace(",", "").isdigit() and "(" in line and ":" in line:
            ir = int(parts[0].replace(",", ""))
            out.append(f"{ir / requests:10.0f}  {' '.join(parts[2:])[:150]}")
        if len(out) >= n:
            break
    return "\n".join(out)


def master_calls(ports: list[int]) -> int:
    """Commands the masters ran since their stats were reset (INFO commandstats), less the
    INFO itself: what one client request cost the cluster."""
    total = 0
    for port in ports:
        repl = compare.try_call(port, "INFO", "replication") or b""
        if b"role:master" not in repl:
            continue
        stats = (compare.try_call(port, "INFO", "commandstats") or b"").decode()
        for line in stats.splitlines():
            if line.startswith("cmdstat_") and not line.startswith("cmdstat_info:"):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slotproxy", type=Path, default=compare.ROOT / "target" / "release" / "slotproxy")
    ap.add_argument("--only", default="", help="run only the case of this name ('NAME*': whose name starts with NAME)")
    ap.add_argument("--top", type=int, default=0, help="print this many top functions per case")
    ap.add_argument("--inclusive", action="store_true", help="--top by inclusive cost (default: self)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (callgrind files)")
    ap.add_argument("--cache-sim", action="store_true",
                    help="also simulate the caches (callgrind --cache-sim=yes): data read/write misses "
                         "of the first-level and last-level cache per request")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            compare.log(f"{tool} not found")
            return 2
    slotproxy = args.slotproxy.resolve()
    procs = compare.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="slotproxy-instr-"))
    try:
        cluster = compare.start_cluster(procs, tmp, slotproxy)
        port = compare.pick_port()
        conf = tmp / "slotproxy.toml"
        conf.write_text("command_timeout_ms = 30000\nconnect_timeout_ms = 30000\n")
        out = tmp / "callgrind.out"
        p = procs.start([
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
            *(["--cache-sim=yes"] if args.cache_sim else []),
            str(slotproxy), "serve", "--config", str(conf), "--listen", f"127.0.0.1:{port}",
            "--seed", f"127.0.0.1:{cluster.ports[0]}", "--log-level", "warn", "--worker-threads", "1",
        ], tmp / "proxy.log")
        compare.wait_until("slotproxy under valgrind to serve SET",
                           lambda: compare.try_call(port, "SET", "warm", "1", timeout=10) == "OK", 120, 1)
        print(f"slotproxy {slotproxy}; userspace instructions per request (callgrind, 1 worker)")
        for name, bargs, n in CASES:
            if args.only and args.only != name and not (args.only.endswith("*") and name.startswith(args.only[:-1])):
                continue
            base = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-r", "100000", "-q"]
            # `-n` before the test: redis-benchmark takes every argument after a command's name as
            # part of that command.
            subprocess.run(base + ["-n", str(n // 5)] + bargs, capture_output=True, timeout=600)
            for node in cluster.ports:
                compare.try_call(node, "CONFIG", "RESETSTAT")
            subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
            t0 = time.monotonic()
            subprocess.run(base + ["-n", str(n)] + bargs, capture_output=True, timeout=600, check=True)
            secs = time.monotonic() - t0
            for old in tmp.glob("callgrind.out*"):
                if old != out:
                    old.unlink()
            subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
            dumps = sorted(tmp.glob("callgrind.out.*"), key=lambda f: f.stat().st_mtime)
            if not dumps:
                raise RuntimeError("callgrind wrote no dump")
            t = totals(dumps[-1])
            ir = t["Ir"]
            calls = master_calls(cluster.ports)
            print(f"{name:28s} {ir / n:8.0f} instructions/request  ({n} requests, {secs:.0f} s, "
                  f"{calls / n:.2f} commands on the masters per request)", flush=True)
            if args.cache_sim:
                print(f"{'':28s} data misses per request: first level {(t['D1mr'] + t['D1mw']) / n:.1f}, "
                      f"last level {(t['DLmr'] + t['DLmw']) / n:.1f}", flush=True)
            if args.top:
                print(top(dumps[-1], n, args.top, args.inclusive), flush=True)
        return 0
    finally:
        compare.clean_up(procs, tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
