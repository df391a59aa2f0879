#!/usr/bin/env python3
"""End-to-end load comparison: slotproxy against a direct cluster client, side by side.

One command (from the repository root):

    python3 benches/compare.py

builds the release binary, starts a six-node Redis Cluster (3 masters + 3 replicas) and slotproxy
in front of it on free loopback ports in a temp dir, then runs redis-benchmark directly against
the cluster (`--cluster`) and through the proxy, alternating A B A B. It reports, per case, the
median ops/s (min..max), the paired ratio proxy/direct, p50/p99 latency, the proxy's CPU seconds
(from /proc/PID/stat) as requests per proxy CPU-second, and the proxy's peak RSS (VmHWM, reset
per case through /proc/PID/clear_refs). A memory run holds 10,000 idle client connections open
(RSS per connection) and moves one 64 MB value through the proxy and directly.

Client scaling: SET and GET at -P 1 with 500 and 5,000 clients, reported as the proxy's requests
per proxy CPU-second against the -c 50 -P 1 figure of the same run. With one client, the added
p50 latency is also given as a ratio of the direct p50. `--list` prints the case names.

The results table is printed, written to benches/RESULTS.md and spliced into benches/README.md.
Every process it starts is stopped by PID, and the temp dir removed, on any exit.

Python 3.11 standard library only; needs redis-server, redis-cli and redis-benchmark (Debian's
redis-server and redis-tools packages).
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
KEYSPACE = 100_000
RUN_TIMEOUT = 120  # seconds; no single redis-benchmark run may take longer
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"


def log(msg: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Processes: everything started is recorded and stopped by PID.
# --------------------------------------------------------------------------------------------


class Procs:
    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, argv: list[str], log_path: Path, **kw) -> subprocess.Popen:
        out = open(log_path, "ab")
        try:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        finally:
            out.close()
        self.started.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        """Stops one process this object started (by its PID) and forgets it."""
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.started.remove(p)

    def stop_all(self) -> None:
        for p in reversed(self.started):
            if p.poll() is None:
                try:
                    p.terminate()  # SIGTERM to this PID only
                except ProcessLookupError:
                    pass
        deadline = time.time() + 5
        for p in reversed(self.started):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.started.clear()


def clean_up(procs: Procs, tmp: Path, keep: bool) -> None:
    """Stops every process started, by PID, and removes the temp dir unless asked to keep it."""
    procs.stop_all()
    if keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_ticks_split(pid: int) -> tuple[int, int]:
    """(utime, stime) of every thread of `pid`, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of `pid`, in clock ticks."""
    return sum(cpu_ticks_split(pid))


def machine_busy_ticks() -> int:
    """CPU ticks the whole machine spent not idle (every process and the kernel's softirq work),
    from the first line of /proc/stat: everything but idle and iowait."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss(pid: int) -> bool:
    """Resets VmHWM to the current RSS (proc(5): writing 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Ports, nodes, cluster, proxy
# --------------------------------------------------------------------------------------------


def port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_base_port() -> int:
    """A base port P with P..P+5 and their bus ports (+10000) free, below the ephemeral range."""
    for _ in range(200):
        base = random.randrange(12000, 22000)
        if all(port_free(p) and port_free(p + 10000) for p in range(base, base + 6)):
            return base
    raise RuntimeError("no free port range found for six nodes")


def pick_port() -> int:
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port < 32768 or port_free(port):
            return port


def resp(*args: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Conn:
    """A minimal blocking RESP client (enough for PING/INFO/SET/GET and big values)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            self._fill()

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data = bytes(self.buf[:n])
            del self.buf[: n + 2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply line {line[:80]!r}")

    def call(self, *args):
        self.sock.sendall(resp(*args))
        return self.reply()


def try_call(port: int, *args, timeout: float = 2.0):
    try:
        c = Conn(port, timeout=timeout)
        try:
            return c.call(*args)
        finally:
            c.close()
    except OSError:
        return None


def wait_until(what: str, cond, timeout: float, every: float = 0.1) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Cluster:
    ports: list[int]
    pids: list[int]
    formed_by: str
    # The masters' PIDs: their CPU per request is the in-run yardstick for the proxy's.
    master_pids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def start_cluster(procs: Procs, tmp: Path, slotproxy: Path, maxclients: int = 10_000) -> Cluster:
    """`maxclients` is passed to every redis-server and checked afterwards: Redis silently lowers
    it when RLIMIT_NOFILE (inherited from this script) cannot hold maxclients + 32 descriptors."""
    base = pick_base_port()
    ports = list(range(base, base + 6))
    pids = []
    warnings = []
    for port in ports:
        d = tmp / f"node-{port}"
        d.mkdir()
        p = procs.start(
            [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                "--cluster-node-timeout", "5000", "--dir", str(d), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                "--logfile", str(d / "redis.log"), "--maxclients", str(maxclients),
            ],
            d / "stdout.log",
        )
        pids.append(p.pid)
    for port in ports:
        wait_until(f"redis-server on {port}", lambda port=port: try_call(port, "PING") == "PONG", 10)
    low = {}
    for port in ports:
        got = try_call(port, "CONFIG", "GET", "maxclients")
        actual = int(got[1]) if isinstance(got, list) and len(got) == 2 else -1
        if actual < maxclients:
            low[port] = actual
    if low:
        warnings.append(f"redis-server maxclients is {', '.join(sorted({str(v) for v in low.values()}))} "
                        f"on {len(low)} of the 6 nodes, asked for {maxclients} (RLIMIT_NOFILE too low for "
                        f"maxclients + 32?): direct runs with many clients may be refused connections")
        log("WARNING: " + warnings[-1])

    nodes = [f"127.0.0.1:{p}" for p in ports]
    help_text = subprocess.run([str(slotproxy), "bootstrap", "--help"], capture_output=True, text=True).stdout
    if "--nodes" in help_text:
        formed_by = "slotproxy bootstrap --nodes"
        cmd = [str(slotproxy), "bootstrap", "--nodes", ",".join(nodes)]
    else:
        formed_by = "redis-cli --cluster create --cluster-replicas 1"
        cmd = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"]
    log(f"forming the cluster on ports {base}..{base + 5} with {formed_by}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        raise RuntimeError(f"forming the cluster failed:\n{r.stdout}\n{r.stderr}")

    def formed() -> bool:
        for port in ports:
            info = try_call(port, "CLUSTER", "INFO")
            if not isinstance(info, bytes) or b"cluster_state:ok" not in info:
                return False
            if b"cluster_known_nodes:6" not in info:
                return False
            repl = try_call(port, "INFO", "replication")
            if isinstance(repl, bytes) and b"role:slave" in repl and b"master_link_status:up" not in repl:
                return False
        return True

    wait_until("cluster_state:ok on all six nodes with replicas in sync", formed, 60, 0.5)
    masters = [pid for port, pid in zip(ports, pids)
               if b"role:master" in (try_call(port, "INFO", "replication") or b"")]
    return Cluster(ports, pids, formed_by, masters, warnings)


def start_proxy(procs: Procs, tmp: Path, slotproxy: Path, cluster: Cluster, threads: int,
                runtime: str) -> subprocess.Popen:
    """Starts slotproxy and waits until it serves a SET; returns its process (`.port` set)."""
    port = pick_port()
    conf = tmp / "slotproxy.toml"
    # 10,000 idle clients plus benchmark clients must fit under the client limit.
    conf.write_text("max_clients = 12000\n")
    argv = [
        str(slotproxy), "serve", "--config", str(conf), "--listen", f"127.0.0.1:{port}",
        "--seed", f"127.0.0.1:{cluster.ports[0]}", "--log-level", "warn",
    ]
    if threads:
        argv += ["--worker-threads", str(threads)]
    if runtime:
        argv += ["--runtime", runtime]
    p = procs.start(argv, tmp / "slotproxy.log")

    def ready() -> bool:
        if p.poll() is not None:
            raise RuntimeError("slotproxy exited:\n" + (tmp / "slotproxy.log").read_text()[-3000:])
        return try_call(port, "SET", "compare:ready", "1") == "OK"

    wait_until("slotproxy to serve SET", ready, 20, 0.2)
    p.port = port  # type: ignore[attr-defined]
    return p


# --------------------------------------------------------------------------------------------
# redis-benchmark runs
# --------------------------------------------------------------------------------------------


def mset_args(n: int, tag: bool) -> list[str]:
    """10 keys with a `{tag}` (one slot; redis-benchmark --cluster fills the tag for the client's
    node) or without (keys spread across slots: the proxy splits them)."""
    out = ["MSET"]
    for i in range(n):
        out += [f"k{i}:{{tag}}:__rand_int__" if tag else f"k{i}:__rand_int__", "xxx"]
    return out


@dataclass
class Variant:
    side: str  # "direct" or "proxy"
    label: str  # what this side runs, for the table
    args: list[str]  # the test: ["-t", "set"] or a custom command


@dataclass
class Case:
    name: str
    clients: int
    pipeline: int
    requests: int
    variants: list[Variant]
    note: str = ""
    # For the client-scaling cases: the case whose requests per proxy CPU-second this one's is
    # reported against ("GET -c 50 -P 1").
    baseline: str = ""


# redis-benchmark --cluster runs one thread per node, and a threaded redis-benchmark stops only
# on its 250 ms progress timer (showThroughput), so a direct run's elapsed time, and with it its
# ops/s, is rounded up to the next multiple of 250 ms; the proxy side (no --cluster) stops on its
# last reply. The request counts below keep direct runs at about 3 s or more on the 2-core
# machine this runs on, so that grid costs the direct side at most ~8% (half that on average);
# the report gives the bound per case. (At the earlier ~1 s runs it hid up to a quarter of the
# direct side's GET -P 16 throughput and so flattered the proxy's ratio.)
TIMER_GRID_S = 0.25
SCALING_CLIENTS = (500, 5000)
# Target for the scaling section: requests per proxy CPU-second at many clients within 20% of
# the -c 50 figure; and for -c 1, the added p50 at most this fraction of the direct p50.
SCALING_TARGET = 0.80
ADDED_P50_TARGET = 0.6
# File descriptors redis-benchmark needs beyond one per client (its event loop, the cluster
# config fetch, stdio).
NOFILE_SLACK = 64


def only_matches(only: str, name: str) -> bool:
    """Whether --only selects the case `name`: `only` occurs in the name, and a number at either
    end of it matches whole, so '-c 50' selects -c 50 but not -c 500 or -c 5000, and 'c 500'
    selects -c 500 but not -c 5000."""
    if not only:
        return True
    pat = re.escape(only)
    if only[0].isdigit():
        pat = r"(?<!\d)" + pat
    if only[-1].isdigit():
        pat += r"(?!\d)"
    return re.search(pat, name) is not None


def select_cases(all_cases: list[Case], only: str) -> list[Case]:
    """The cases --only selects, plus the -c 50 -P 1 baseline of any selected scaling case (its
    ratio is against the same run's baseline), in build_cases' order."""
    chosen = {c.name for c in all_cases if only_matches(only, c.name)}
    chosen |= {c.baseline for c in all_cases if c.name in chosen and c.baseline}
    return [c for c in all_cases if c.name in chosen]


def build_cases(scale: float) -> list[Case]:
    def n(x: int) -> int:
        return max(1000, int(x * scale))

    set_, get = ["-t", "set"], ["-t", "get"]
    tagged, spread = mset_args(10, True), mset_args(10, False)
    cases = []
    for c, p, base in [(50, 1, 250_000), (50, 16, 2_400_000)]:
        cases.append(Case(f"SET -c {c} -P {p}", c, p, n(base),
                          [Variant("direct", "SET", set_), Variant("proxy", "SET", set_)]))
        cases.append(Case(f"GET -c {c} -P {p}", c, p, n(base),
                          [Variant("direct", "GET", get), Variant("proxy", "GET", get)]))
        cases.append(Case(
            f"MSET 10 keys -c {c} -P {p}", c, p, n(base // (4 if p == 1 else 12)),
            [
                Variant("direct", "MSET, 1 slot", tagged),
                Variant("proxy", "MSET, 1 slot", tagged),
                Variant("proxy", "MSET, spread", spread),
            ],
            note="A direct cluster client cannot send a cross-slot MSET: its MSET puts all 10 keys "
            "under one hash tag (one node, one slot). The proxy runs both that and 10 keys spread "
            "across slots (split into up to 10 per-slot MSETs); both proxy ratios are against the "
            "direct one-slot MSET.",
        ))
    # Client scaling at -P 1: the same request count as -c 50 -P 1 (direct runs of about 3 s or
    # more on 2 cores). Direct, redis-benchmark --cluster splits the -c clients over its one
    # thread per master (about c/3 connections to each of the 3 masters, under their maxclients);
    # through the proxy, all c connect to the proxy (max_clients 12000 in its config), which
    # keeps its own few connections per node. redis-benchmark needs RLIMIT_NOFILE above c: main()
    # raises it before any case runs.
    for c in SCALING_CLIENTS:
        for name, args in [("SET", set_), ("GET", get)]:
            cases.append(Case(f"{name} -c {c} -P 1", c, 1, n(250_000),
                              [Variant("direct", name, args), Variant("proxy", name, args)],
                              baseline=f"{name} -c 50 -P 1"))
    for name, args in [("SET", set_), ("GET", get)]:
        cases.append(Case(f"{name} -c 1 -P 1", 1, 1, n(25_000),
                          [Variant("direct", name, args), Variant("proxy", name, args)]))
    return cases


@dataclass
class Run:
    case: str
    variant: str
    side: str
    repeat: int
    rps: float
    p50_ms: float
    p99_ms: float
    seconds: float
    requests: int
    proxy_cpu_s: float | None = None
    errors: str = ""
    masters_cpu_s: float | None = None
    machine_cpu_s: float | None = None
    # The kernel's part of proxy_cpu_s (stime): what the proxy's sockets cost, whatever its code.
    proxy_sys_s: float | None = None


def parse_csv(out: str) -> tuple[float, float, float]:
    """(rps, p50 ms, p99 ms) from redis-benchmark 7's --csv output (last data line)."""
    rows = [l for l in out.splitlines() if l.startswith('"') and not l.startswith('"test"')]
    if not rows:
        raise RuntimeError(f"no CSV result in redis-benchmark output:\n{out[-2000:]}")
    cols = [c.strip('"') for c in rows[-1].split('","')]
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    return float(cols[1]), float(cols[4]), float(cols[6])


def bench(case: Case, v: Variant, port: int, repeat: int, proxy_pid: int | None,
          master_pids: list[int]) -> Run:
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(case.clients),
            "-P", str(case.pipeline), "-n", str(case.requests), "-r", str(KEYSPACE), "--csv"]
    if v.side == "direct":
        argv.append("--cluster")
    argv += v.args
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile != resource.RLIM_INFINITY and nofile < case.clients + NOFILE_SLACK:
        raise RuntimeError(f"{case.name}: RLIMIT_NOFILE {nofile} is too low for {case.clients} "
                           f"redis-benchmark clients (raise the hard limit: ulimit -Hn)")
    user0, sys0 = cpu_ticks_split(proxy_pid) if proxy_pid else (0, 0)
    masters0 = sum(cpu_ticks(p) for p in master_pids)
    busy0 = machine_busy_ticks()
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    secs = time.monotonic() - t0
    user1, sys1 = cpu_ticks_split(proxy_pid) if proxy_pid else (0, 0)
    cpu = (user1 + sys1 - user0 - sys0) / CLK_TCK if proxy_pid else None
    sys_s = (sys1 - sys0) / CLK_TCK if proxy_pid else None
    masters = (sum(cpu_ticks(p) for p in master_pids) - masters0) / CLK_TCK if master_pids else None
    busy = (machine_busy_ticks() - busy0) / CLK_TCK
    if r.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed ({' '.join(argv)}):\n{r.stdout}\n{r.stderr}")
    rps, p50, p99 = parse_csv(r.stdout)
    errors = " ".join(l for l in (r.stderr + r.stdout).splitlines() if "rror" in l)[:300]
    return Run(case.name, v.label, v.side, repeat, rps, p50, p99, secs, case.requests, cpu, errors, masters, busy,
               sys_s)


# --------------------------------------------------------------------------------------------
# Memory runs
# --------------------------------------------------------------------------------------------


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def idle_connections(proxy_port: int, proxy_pid: int, count: int) -> dict:
    """RSS per idle client connection: after connecting `count` clients, and after each has
    done one PING round trip (so its session has read and written once)."""
    time.sleep(1.0)
    before = status_kb(proxy_pid, "VmRSS")
    socks: list[socket.socket] = []
    try:
        t0 = time.monotonic()
        for i in range(count):
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"connecting idle clients took over 120 s (at {i} of {count})")
            s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
            socks.append(s)
        connect_s = time.monotonic() - t0
        time.sleep(1.5)
        connected = status_kb(proxy_pid, "VmRSS")
        ping = resp("PING")
        for s in socks:
            s.settimeout(30)
            s.sendall(ping)
        for s in socks:
            got = b""
            while not got.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    raise RuntimeError("proxy closed an idle connection")
                got += chunk
            if got != b"+PONG\r\n":
                raise RuntimeError(f"unexpected PING reply {got!r}")
        time.sleep(1.5)
        after_ping = status_kb(proxy_pid, "VmRSS")
    finally:
        for s in socks:
            s.close()
    time.sleep(1.0)
    closed = status_kb(proxy_pid, "VmRSS")
    return {
        "count": count,
        "rss_before_kb": before,
        "rss_connected_kb": connected,
        "rss_after_ping_kb": after_ping,
        "rss_after_close_kb": closed,
        "per_conn_connected_b": (connected - before) * 1024 / count,
        "per_conn_after_ping_b": (after_ping - before) * 1024 / count,
        "connect_s": connect_s,
    }


def owner_port(ports: list[int], key: bytes) -> int:
    """The master port serving `key`, following one -MOVED."""
    r = try_call(ports[0], "GET", key, timeout=5)
    if isinstance(r, RuntimeError) and str(r).startswith("MOVED"):
        return int(str(r).split()[2].rsplit(":", 1)[1])
    return ports[0]


def big_value(proxy_port: int, proxy_pid: int, ports: list[int], mb: int, repeats: int) -> dict:
    """One `mb` MB value SET then GET, through the proxy and directly (alternating), timed; the
    proxy's peak RSS growth over its RSS before the transfer."""
    size = mb * 1024 * 1024
    value = os.urandom(1024) * (size // 1024)
    key = b"compare:big"
    direct_port = owner_port(ports, key)
    res = {"mb": mb, "direct_set_s": [], "direct_get_s": [], "proxy_set_s": [], "proxy_get_s": [],
           "proxy_peak_growth_kb": [], "proxy_rss_before_kb": []}

    def transfer(port: int, side: str) -> None:
        c = Conn(port, timeout=60)
        try:
            t0 = time.monotonic()
            if c.call("SET", key, value) != "OK":
                raise RuntimeError(f"{side} SET of the big value failed")
            t1 = time.monotonic()
            got = c.call("GET", key)
            t2 = time.monotonic()
            if got != value:
                raise RuntimeError(f"{side} GET returned a different value")
            del got
            res[f"{side}_set_s"].append(t1 - t0)
            res[f"{side}_get_s"].append(t2 - t1)
        finally:
            c.close()
        try_call(port, "DEL", key)

    for _ in range(repeats):
        transfer(direct_port, "direct")
        time.sleep(0.5)
        before = status_kb(proxy_pid, "VmRSS")
        reset_peak_rss(proxy_pid)
        transfer(proxy_port, "proxy")
        peak = status_kb(proxy_pid, "VmHWM")
        res["proxy_rss_before_kb"].append(before)
        res["proxy_peak_growth_kb"].append(peak - before)
    time.sleep(1.0)
    res["proxy_rss_after_kb"] = status_kb(proxy_pid, "VmRSS")
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_rps(x: float) -> str:
    return f"{x / 1000:.1f}k"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rv = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    version = next((w[2:] for w in rv if w.startswith("v=")), "?")
    return f"{os.cpu_count()} CPUs ({model}), Linux {os.uname().release}, Redis {version}"


# Issue 13's CPU targets: requests per proxy CPU-second against a master's, at -P 1 and -P 16.
CPU_TARGETS = {1: 1.0, 16: 2.0}


def user_sys_us(runs: list[Run], case_name: str) -> tuple[float, float] | None:
    """The proxy's user and system CPU-µs per request in `case_name`, medians of its runs."""
    rs = [r for r in runs if r.case == case_name and r.side == "proxy" and r.proxy_cpu_s
          and r.proxy_sys_s is not None]
    if not rs:
        return None
    return (med([(r.proxy_cpu_s - r.proxy_sys_s) / r.requests * 1e6 for r in rs]),
            med([r.proxy_sys_s / r.requests * 1e6 for r in rs]))


def kernel_floor(cases: list[Case], runs: list[Run]) -> list[str]:
    """The proxy's CPU per request split into user and system time, beside a master's whole CPU
    per request, and the CPU ratio the proxy would read with no userspace time at all (its
    system time alone against a master's user + system): the best its code could do with the
    sockets it uses."""
    L = []
    for case in cases:
        target = CPU_TARGETS.get(case.pipeline)
        if case.clients != 50 or target is None or case.name.split()[0] not in ("SET", "GET"):
            continue
        direct = [r.masters_cpu_s / r.requests * 1e6 for r in runs
                  if r.case == case.name and r.side == "direct" and r.masters_cpu_s]
        split = user_sys_us(runs, case.name)
        if not direct or not split:
            continue
        user_us, sys_us = split
        master_us = med(direct)
        ceiling = master_us / sys_us if sys_us else float("inf")
        now = master_us / (user_us + sys_us)
        L.append(f"| {case.name} | {user_us:.2f} | {sys_us:.2f} | {master_us:.2f} | {now:.2f}x | "
                 f"**{ceiling:.2f}x** | {target:.1f}x |")
    if not L:
        return []
    return ["The proxy's CPU per request, user and system (median of the repeats), beside a master's "
            "(user + system, direct runs); the ratio is a master's CPU per request over the proxy's "
            "(the CPU target's, from these medians), the ceiling the ratio the proxy would read with "
            "no userspace time at all, its system time alone against a master's whole:",
            "",
            "| case | proxy user µs/req | proxy system µs/req | master µs/req | ratio | ceiling | target |",
            "|---|---|---|---|---|---|---|"] + L + [""]


def report(cases: list[Case], runs: list[Run], mem: dict | None, big: dict | None, meta: dict) -> str:
    L = []
    L.append(f"Date: {meta['date']}  ")
    L.append(f"Machine: {meta['machine']}  ")
    L.append(f"Proxy: slotproxy {meta['commit']}, release build, runtime {meta['runtime'] or 'default'}, "
             f"{meta['threads'] or 'the default'} worker threads (the default: one per core, one on 2 cores or fewer), metrics off; "
             f"cluster formed by {meta['formed_by']}  ")
    L.append(f"Command: `{meta['command']}`  ")
    L.append(f"Repeats: {meta['repeats']} per variant, alternating direct and proxy runs; "
             f"keyspace {KEYSPACE} keys (`-r`), 3-byte values.")
    L.append("")
    L.append("| case | side: what | ops/s median (min..max) | proxy/direct paired ratio median (min..max) "
             "| p50 ms | p99 ms | req per proxy CPU-s | req per master CPU-s | machine CPU-µs per req | proxy peak RSS |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for case in cases:
        direct = [r for r in runs if r.case == case.name and r.side == "direct"]
        by_rep_direct = {r.repeat: r for r in direct}
        for v in case.variants:
            rs = [r for r in runs if r.case == case.name and r.variant == v.label and r.side == v.side]
            if not rs:
                continue
            rps = [r.rps for r in rs]
            cell_rps = f"{fmt_rps(med(rps))} ({fmt_rps(min(rps))}..{fmt_rps(max(rps))})"
            ratio = cpu_cell = rss_cell = masters_cell = "-"
            per_master = [r.requests / r.masters_cpu_s for r in rs if r.masters_cpu_s]
            if per_master:
                masters_cell = (f"{fmt_rps(med(per_master))} "
                                f"({fmt_rps(min(per_master))}..{fmt_rps(max(per_master))})")
            us = [r.machine_cpu_s / r.requests * 1e6 for r in rs if r.machine_cpu_s]
            machine_cell = f"{med(us):.1f} ({min(us):.1f}..{max(us):.1f})" if us else "-"
            if v.side == "proxy":
                ratios = [r.rps / by_rep_direct[r.repeat].rps for r in rs if r.repeat in by_rep_direct]
                if ratios:
                    ratio = f"**{med(ratios):.2f}x** ({min(ratios):.2f}..{max(ratios):.2f})"
                per_cpu = [r.requests / r.proxy_cpu_s for r in rs if r.proxy_cpu_s]
                if per_cpu:
                    cpu_cell = f"{fmt_rps(med(per_cpu))} ({fmt_rps(min(per_cpu))}..{fmt_rps(max(per_cpu))})"
                rss = meta["peak_rss_kb"].get(case.name)
                rss_cell = f"{rss / 1024:.1f} MB" if rss else "-"
            L.append(
                f"| {case.name} | {v.side}: {v.label} | {cell_rps} | {ratio} | {med([r.p50_ms for r in rs]):.3f} "
                f"| {med([r.p99_ms for r in rs]):.3f} | {cpu_cell} | {masters_cell} | {machine_cell} | {rss_cell} |"
            )
        if case.note and case.note not in notes:
            notes.append(case.note)
    L.append("")
    # Added latency with one client: paired p50 differences.
    for case in cases:
        if case.clients != 1:
            continue
        d = {r.repeat: r for r in runs if r.case == case.name and r.side == "direct"}
        diffs = [(r.p50_ms - d[r.repeat].p50_ms) * 1000 for r in runs
                 if r.case == case.name and r.side == "proxy" and r.repeat in d]
        rel = [(r.p50_ms - d[r.repeat].p50_ms) / d[r.repeat].p50_ms for r in runs
               if r.case == case.name and r.side == "proxy" and r.repeat in d and d[r.repeat].p50_ms > 0]
        if diffs:
            line = (f"- Added p50 latency, {case.name}: **{med(diffs):.0f} µs** "
                    f"(paired, {min(diffs):.0f}..{max(diffs):.0f} µs)")
            if rel:
                dp50 = med([r.p50_ms for r in d.values()]) * 1000
                line += (f"; added p50 / direct p50: **{med(rel):.2f}x** ({min(rel):.2f}..{max(rel):.2f}, "
                         f"paired; direct p50 {dp50:.0f} µs; target <= {ADDED_P50_TARGET}x)")
            L.append(line)
    one_client = {c.name for c in cases if c.clients == 1}
    if any(r.case in one_client for r in runs):
        L.append("- redis-benchmark's percentiles come from its latency histogram in steps of 8 µs at "
                 "these latencies (p50 values like 0.023, 0.031, 0.039, 0.047 ms): with a direct p50 of "
                 "23 µs the added-p50 ratio can only be 0.35x, 0.70x, 1.04x, ..., so read it as a step, "
                 "and over several repeats.")
    # Client scaling: the proxy's requests per CPU-second with many clients against -c 50.
    scaling = {}
    for case in cases:
        if not case.baseline:
            continue
        per_cpu = [r.requests / r.proxy_cpu_s for r in runs
                   if r.case == case.name and r.side == "proxy" and r.proxy_cpu_s]
        base = [r.requests / r.proxy_cpu_s for r in runs
                if r.case == case.baseline and r.side == "proxy" and r.proxy_cpu_s]
        if per_cpu and base:
            scaling.setdefault(case.baseline, []).append((case, med(per_cpu), med(base)))
    S = []
    if scaling:
        S.append("Scaling with clients (requests per proxy CPU-second, median of the repeats, "
                 "against the same run's -c 50 -P 1 figure):")
        S.append("")
        def us(name: str) -> str:
            split = user_sys_us(runs, name)
            return f"; user {split[0]:.1f} + system {split[1]:.1f} µs per request" if split else ""
        for base_name, items in scaling.items():
            op = base_name.split()[0]
            parts = [f"-c {c.clients} **{x / b:.2f}x** ({fmt_rps(x)}{us(c.name)})" for c, x, b in items]
            worst = min(x / b for _, x, b in items)
            verdict = "met" if worst >= SCALING_TARGET else "NOT met"
            thin = [f"-c {c.clients}: {c.requests / c.clients:.1f}" for c, _, _ in items
                    if c.requests < 20 * c.clients]
            S.append(f"- {op}: " + ", ".join(parts) + f" of -c 50 ({fmt_rps(items[0][2])}{us(base_name)}) "
                     f"(target: within 20%, i.e. >= {SCALING_TARGET:.2f}x: {verdict})"
                     + (f"; too few requests per client to mean much ({', '.join(thin)}): connecting "
                        "dominates the proxy's CPU, raise --scale" if thin else ""))
        S.append("- Direct, `redis-benchmark --cluster` splits the clients over its one thread per "
                 "master (about a third of them connect to each master); through the proxy "
                 "all of them are the proxy's clients, and it keeps its own few connections per node. "
                 "redis-benchmark opens its clients before it starts the clock (through the proxy, "
                 "64 at a time with a 50 ms pause), so connecting is not in ops/s, but the proxy's "
                 "accepts and closes are in its CPU seconds: on the 2-core machine this was written "
                 "on, about 40 µs of proxy CPU per connection, some 0.2 s against about 4 s for the "
                 "250,000 requests at -c 5000 (a ratio about 5% low), and most of the figure at a "
                 "small --scale.")
    grid = []
    for case in cases:
        secs = [r.requests / r.rps for r in runs if r.case == case.name and r.side == "direct" and r.rps]
        if secs:
            grid.append(f"{case.name} {med(secs):.1f} s ({TIMER_GRID_S / med(secs) * 100:.0f}%)")
    if grid:
        L.append("- Direct runs (`redis-benchmark --cluster`, threaded) end on its 250 ms timer, so their "
                 "elapsed time is rounded up to a multiple of 250 ms: direct ops/s read low, and ratios "
                 "high, by up to one grid step. Median direct run and that step: " + "; ".join(grid) + ".")
    errs = sorted({f"{r.case} / {r.side}: {r.errors}" for r in runs if r.errors})
    for n in notes:
        L.append(f"- {n}")
    L.append("- ops/s for MSET counts MSET commands (10 keys each). Requests per proxy CPU-second = "
             "client requests in the run / (utime + stime of the proxy over the run).")
    L.append("- Requests per master CPU-second = the same requests / (utime + stime of the three "
             "masters together over the run): what Redis itself spends per request, on the same "
             "machine in the same run, as a yardstick for the proxy's figure (a master does one "
             "receive and one send per request; the proxy does that on both of its sides).")
    L.append("- Machine CPU-µs per request = CPU time the whole machine was busy during the run (all "
             "processes and the kernel: /proc/stat, all but idle and iowait) / client requests. "
             "When both sides keep the machine busy, the throughput ratio is about the direct "
             "figure over the proxy's: the proxy's ratio is bounded by what its hop adds to the "
             "machine's work per request, whoever does that work.")
    L.append("- Peak RSS is the proxy's VmHWM over that case's proxy runs (reset per case).")
    if errs:
        L.append("- redis-benchmark reported errors: " + "; ".join(errs))
    for w in meta.get("warnings", []):
        L.append(f"- **Warning**: {w}")
    L.append("")
    if S:
        L += S + [""]
    L += kernel_floor(cases, runs)
    if mem:
        L.append("| memory | value |")
        L.append("|---|---|")
        L.append(f"| {mem['count']} idle client connections, RSS per connection (connected) "
                 f"| **{mem['per_conn_connected_b'] / 1024:.1f} KB** |")
        L.append(f"| same, after one PING each | **{mem['per_conn_after_ping_b'] / 1024:.1f} KB** |")
        L.append(f"| proxy RSS before / connected / after PING / after close "
                 f"| {mem['rss_before_kb'] / 1024:.1f} / {mem['rss_connected_kb'] / 1024:.1f} / "
                 f"{mem['rss_after_ping_kb'] / 1024:.1f} / {mem['rss_after_close_kb'] / 1024:.1f} MB |")
    if big:
        mb = big["mb"]
        g = big["proxy_peak_growth_kb"]
        runs_mb = ", ".join(f"{x / 1024:.0f}" for x in g)
        L.append(f"| {mb} MB value: proxy peak RSS growth over RSS before, worst of {len(g)} (each run, MB) "
                 f"| **{max(g) / 1024:.0f} MB = {max(g) / 1024 / mb:.2f}x** ({runs_mb}) |")
        for op in ("set", "get"):
            ds, ps = big[f"direct_{op}_s"], big[f"proxy_{op}_s"]
            L.append(f"| {mb} MB value {op.upper()} time, direct / proxy (median) "
                     f"| {med(ds) * 1000:.0f} ms / {med(ps) * 1000:.0f} ms ({med(ps) / med(ds):.2f}x) |")
        L.append(f"| proxy RSS after the big-value runs | {big['proxy_rss_after_kb'] / 1024:.1f} MB |")
        L.append("")
    return "\n".join(L)


def raw_table(runs: list[Run]) -> str:
    L = ["| case | side: what | repeat | ops/s | p50 ms | p99 ms | seconds | proxy CPU s | masters CPU s |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        cpu = f"{r.proxy_cpu_s:.2f}" if r.proxy_cpu_s is not None else "-"
        masters = f"{r.masters_cpu_s:.2f}" if r.masters_cpu_s is not None else "-"
        L.append(f"| {r.case} | {r.side}: {r.variant} | {r.repeat} | {r.rps:.0f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} "
                 f"| {r.seconds:.2f} | {cpu} | {masters} |")
    return "\n".join(L)


def write_outputs(summary: str, raw: str) -> None:
    results = ROOT / "benches" / "RESULTS.md"
    results.write_text("# slotproxy vs direct cluster: latest results\n\n"
                       "Written by `benches/compare.py`; see benches/README.md for what each column means.\n\n"
                       + summary + "\n## Every run\n\n" + raw + "\n")
    readme = ROOT / "benches" / "README.md"
    if readme.exists():
        text = readme.read_text()
        if README_START in text and README_END in text:
            head, rest = text.split(README_START, 1)
            _, tail = rest.split(README_END, 1)
            readme.write_text(head + README_START + "\n" + summary + "\n" + README_END + tail)
    log(f"wrote {results.relative_to(ROOT)} and the table in benches/README.md")


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per variant (alternating A B A B)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every run's request count")
    ap.add_argument("--only", default="",
                    help="run only cases whose name contains this (e.g. 'GET -c 50'); a number at either "
                         "end matches whole ('c 500' is not 'c 5000'); a selected client-scaling case "
                         "brings its -c 50 -P 1 baseline along")
    ap.add_argument("--list", action="store_true",
                    help="print the case names (those --only selects, if given) and exit")
    # One worker by default: on the 2-core machine this runs on, the load generator and six
    # redis-servers share the cores with the proxy, and one worker measured best there (and is
    # how the predixy reference in issue 5 was measured). 0 gives the proxy's own default.
    ap.add_argument("--worker-threads", type=int, default=1,
                    help="slotproxy --worker-threads (default 1; 0: the proxy's default, one per core, one on 2 cores or fewer)")
    ap.add_argument("--runtime", default="", help="slotproxy --runtime (per-core or work-stealing; default: its own)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--slotproxy", type=Path, default=None,
                    help="run this slotproxy binary instead of target/release/slotproxy (implies --no-build)")
    ap.add_argument("--no-memory", action="store_true", help="skip the idle-connection and big-value runs")
    ap.add_argument("--idle-conns", type=int, default=10_000)
    ap.add_argument("--big-mb", type=int, default=64)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and README.md alone")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    ap.add_argument("--hold", type=float, default=0,
                    help="after setup, print the ports and hold the cluster and proxy up this many seconds "
                         "(for profiling by hand), then clean up")
    args = ap.parse_args()

    if args.list:
        for c in select_cases(build_cases(args.scale), args.only):
            print(f"{c.name:<26} -c {c.clients:<5} -P {c.pipeline:<3} -n {c.requests:<8} "
                  + ", ".join(f"{v.side}: {v.label}" for v in c.variants))
        return 0

    # Before the build, so a mistyped --only costs nothing.
    cases = select_cases(build_cases(args.scale), args.only)
    if not cases and not args.hold:
        log(f"no case matches --only {args.only!r} (see --list)")
        return 2

    for tool in ("redis-server", "redis-cli", "redis-benchmark"):
        if not shutil.which(tool):
            log(f"{tool} not found: install Debian's redis-server and redis-tools packages")
            return 2
    if not args.no_build and args.slotproxy is None:
        log("cargo build --release")
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    slotproxy = (args.slotproxy or ROOT / "target" / "release" / "slotproxy").resolve()

    max_clients = max((c.clients for c in cases), default=0)
    # Inherited by the proxy, the redis-servers (maxclients + 32 each) and redis-benchmark (one
    # descriptor per client).
    nofile = raise_nofile(max(args.idle_conns, max_clients, 10_000) + 2048)
    if nofile < args.idle_conns + 1024:
        log(f"RLIMIT_NOFILE is {nofile}; lowering --idle-conns to fit")
        args.idle_conns = max(0, nofile - 1024)
    too_many = [c.name for c in cases if c.clients + NOFILE_SLACK > nofile]
    warnings = []
    if too_many:
        warnings.append(f"not run: {', '.join(too_many)}: RLIMIT_NOFILE is {nofile} (hard limit "
                        f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}), too low for that many "
                        f"redis-benchmark clients")
        log("WARNING: " + warnings[-1])
        cases = [c for c in cases if c.name not in too_many]
    # redis-server's maxclients: the direct clients on one master (redis-benchmark --cluster puts
    # about a third of -c on each, but allow all of them) plus the proxy's and the replicas'
    # connections, never below Redis's default of 10000.
    redis_maxclients = max(10_000, max_clients + 1024)

    # Turn SIGTERM/SIGHUP into SystemExit so the finally block cleans up.
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="slotproxy-compare-"))
    runs: list[Run] = []
    try:
        cluster = start_cluster(procs, tmp, slotproxy, redis_maxclients)
        proxy = start_proxy(procs, tmp, slotproxy, cluster, args.worker_threads, args.runtime)
        proxy_port, proxy_pid = proxy.port, proxy.pid
        log(f"cluster on {cluster.ports[0]}..{cluster.ports[-1]}, slotproxy pid {proxy_pid} on {proxy_port}")
        if args.hold:
            print(f"HOLD proxy_port={proxy_port} proxy_pid={proxy_pid} cluster_port={cluster.ports[0]} "
                  f"tmp={tmp}", flush=True)
            time.sleep(args.hold)
            return 0

        peak_rss: dict[str, int] = {}
        for case in cases:
            reset_peak_rss(proxy_pid)
            for rep in range(args.repeats):
                for v in case.variants:
                    port = cluster.ports[0] if v.side == "direct" else proxy_port
                    r = bench(case, v, port, rep, proxy_pid if v.side == "proxy" else None,
                              cluster.master_pids)
                    runs.append(r)
                    extra = f", proxy {r.requests / r.proxy_cpu_s / 1000:.0f}k req/CPU-s" if r.proxy_cpu_s else ""
                    log(f"{case.name:<24} {v.side}: {v.label:<13} #{rep}: {r.rps:>10.0f} ops/s  "
                        f"p50 {r.p50_ms:.3f} ms  p99 {r.p99_ms:.3f} ms{extra}"
                        + (f"  ERRORS: {r.errors}" if r.errors else ""))
            peak_rss[case.name] = status_kb(proxy_pid, "VmHWM")

        mem = big = None
        if not args.no_memory:
            # Each memory run gets a fresh proxy, so memory the allocator kept from earlier runs
            # neither hides nor inflates what this run costs.
            procs.stop(proxy)
            proxy = start_proxy(procs, tmp, slotproxy, cluster, args.worker_threads, args.runtime)
            log(f"memory: one {args.big_mb} MB value, SET then GET (fresh proxy, pid {proxy.pid})")
            big = big_value(proxy.port, proxy.pid, cluster.ports, args.big_mb, repeats=2)
            procs.stop(proxy)
            proxy = start_proxy(procs, tmp, slotproxy, cluster, args.worker_threads, args.runtime)
            log(f"memory: {args.idle_conns} idle connections (fresh proxy, pid {proxy.pid})")
            mem = idle_connections(proxy.port, proxy.pid, args.idle_conns)
            log(f"memory: {mem['per_conn_connected_b'] / 1024:.1f} KB per connection "
                f"({mem['per_conn_after_ping_b'] / 1024:.1f} KB after a PING)")

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "src"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        meta = {
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine(),
            "commit": commit + ("+dirty" if dirty else ""),
            "threads": args.worker_threads,
            "runtime": args.runtime,
            "formed_by": cluster.formed_by,
            "command": "python3 benches/compare.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
            "repeats": args.repeats,
            "peak_rss_kb": peak_rss,
            "warnings": warnings + cluster.warnings,
        }
        summary = report(cases, runs, mem, big, meta)
        print(summary)
        if not args.no_write:
            write_outputs(summary, raw_table(runs))
        return 0
    finally:
        clean_up(procs, tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
