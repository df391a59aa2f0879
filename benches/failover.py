#!/usr/bin/env python3
"""Failover under load: errors and the error burst through slotproxy, beside a cluster-aware
client (redis-py's RedisCluster) directly on the same kind of cluster, in one run.

    python3 benches/failover.py [--slotproxy PATH] [--no-build] [--node-timeout-ms 3000]

For each side it starts a fresh six-node cluster (3 masters + 3 replicas, the given
cluster-node-timeout) on free loopback ports in a temp dir, runs 4 client threads INCRing 1,000
keys (250 each, round-robin) for --duration seconds, SIGKILLs the master of slot 0 --kill-at
seconds in, and reports: errors (and their kinds), the error burst (first to last error), the
longest any client waited for one reply, when the cluster promoted the replica (seen by polling
CLUSTER NODES on a live node every 50 ms), and acknowledged INCRs lost (asynchronous
replication may lose the last writes the dead master acknowledged; neither side can help that).

Every process it starts is stopped by PID and the temp dir removed on any exit. Needs
redis-server and redis-cli (Debian), python3; the direct side needs redis-py (`pip install
redis`); without it only the proxy side runs, and the proxy side uses a minimal RESP client.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (the process, port and RESP helpers of the load comparison)

try:
    import redis  # type: ignore
    from redis.cluster import RedisCluster  # type: ignore
except ImportError:  # pragma: no cover
    redis = None

ROOT = compare.ROOT
CLIENTS = 4
KEYS = 1000


def log(msg: str) -> None:
    print(f"[failover {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_cluster(procs: compare.Procs, tmp: Path, slotproxy: Path, node_timeout_ms: int) -> list[int]:
    """Six nodes formed by `slotproxy bootstrap --nodes`; returns their ports."""
    base = compare.pick_base_port()
    ports = list(range(base, base + 6))
    for port in ports:
        d = tmp / f"node-{port}"
        d.mkdir()
        procs.start(
            [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms), "--dir", str(d), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                "--repl-diskless-sync-delay", "0", "--logfile", str(d / "redis.log"),
            ],
            d / "stdout.log",
        )
    for port in ports:
        compare.wait_until(f"redis-server on {port}", lambda port=port: compare.try_call(port, "PING") == "PONG", 10)
    nodes = ",".join(f"127.0.0.1:{p}" for p in ports)
    r = subprocess.run([str(slotproxy), "bootstrap", "--nodes", nodes], capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        raise RuntimeError(f"forming the cluster failed:\n{r.stdout}\n{r.stderr}")
    return ports


def cluster_nodes(port: int) -> list[list[str]]:
    text = compare.try_call(port, "CLUSTER", "NODES", timeout=1.0)
    if not isinstance(text, bytes):
        return []
    return [line.split() for line in text.decode().splitlines() if line.strip()]


def master_of_slot0(port: int) -> tuple[str, int]:
    """(node id, port) of the master serving slot 0."""
    for f in cluster_nodes(port):
        if "master" in f[2] and "fail" not in f[2] and any(r.split("-")[0] == "0" for r in f[8:]):
            return f[0], int(f[1].split("@")[0].rsplit(":", 1)[1])
    raise RuntimeError("no master serves slot 0")


@dataclass
class Side:
    name: str
    ops: int = 0
    errors: list[tuple[float, str]] = field(default_factory=list)
    longest_wait: float = 0.0
    acked: dict[str, int] = field(default_factory=dict)
    promoted_after: float | None = None
    lost: int = 0


def kind(e: BaseException | str) -> str:
    text = str(e)
    for k in ("may or may not have run", "cannot reach node", "Hash slot not served", "cluster is down",
              "did not reply within"):
        if k in text:
            return k
    return type(e).__name__ if not isinstance(e, str) else text[:60]


def run_side(name: str, ports: list[int], proxy_port: int | None, args, procs: compare.Procs,
             pids: dict[int, int]) -> Side:
    side = Side(name)
    victim_id, victim_port = master_of_slot0(ports[0])
    live = next(p for p in ports if p != victim_port)
    lock = threading.Lock()
    stop = threading.Event()
    t0 = time.time()

    def client(c: int) -> None:
        keys = [f"fo:{i}" for i in range(c, KEYS, CLIENTS)]
        acked = {k: 0 for k in keys}
        errors: list[tuple[float, str]] = []
        longest = 0.0
        ops = 0
        conn = None
        i = 0
        while not stop.is_set():
            k = keys[i % len(keys)]
            i += 1
            start = time.time()
            try:
                if conn is None:
                    if proxy_port is not None:
                        conn = (redis.Redis(port=proxy_port, socket_timeout=60) if redis
                                else compare.Conn(proxy_port, timeout=60))
                    else:
                        conn = RedisCluster(host="127.0.0.1", port=live, socket_timeout=5)
                if isinstance(conn, compare.Conn):
                    r = conn.call("INCR", k)
                    if isinstance(r, Exception):
                        raise r
                else:
                    conn.incr(k)
                acked[k] += 1
            except Exception as e:  # every failure a client sees counts
                errors.append((time.time() - t0, kind(e)))
                if isinstance(conn, compare.Conn) and not isinstance(e, RuntimeError):
                    conn = None
            longest = max(longest, time.time() - start)
            ops += 1
        with lock:
            side.acked.update(acked)
            side.errors.extend(errors)
            side.longest_wait = max(side.longest_wait, longest)
            side.ops += ops

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(args.kill_at)
    pid = pids[victim_port]
    killed = time.time()
    subprocess.run(["kill", "-9", str(pid)], check=False)
    log(f"{name}: SIGKILL master 127.0.0.1:{victim_port} (pid {pid}) at {killed - t0:.1f}s")
    while time.time() - t0 < args.duration:
        if side.promoted_after is None:
            try:
                mid, mport = master_of_slot0(live)
                if mid != victim_id:
                    side.promoted_after = time.time() - killed
                    log(f"{name}: 127.0.0.1:{mport} promoted {side.promoted_after:.2f}s after the kill")
            except RuntimeError:
                pass
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=90)
    side.errors.sort()
    # Acknowledged INCRs lost: read every key back from its (new) master.
    reader = (redis.Redis(port=proxy_port) if proxy_port is not None else RedisCluster(host="127.0.0.1", port=live)) \
        if redis else compare.Conn(proxy_port or live)
    for k, n in side.acked.items():
        v = reader.get(k) if redis else reader.call("GET", k)
        side.lost += max(0, n - int(v or 0))
    return side


def report(sides: list[Side], args) -> str:
    rows = [
        "| side | ops | errors | error kinds | error burst | longest wait for one reply | promotion after kill | acknowledged INCRs lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sides:
        kinds: dict[str, int] = {}
        for _, k in s.errors:
            kinds[k] = kinds.get(k, 0) + 1
        burst = f"{s.errors[-1][0] - s.errors[0][0]:.2f} s" if s.errors else "-"
        promo = f"{s.promoted_after:.2f} s" if s.promoted_after is not None else "not seen"
        rows.append(
            f"| {s.name} | {s.ops} | {len(s.errors)} | {', '.join(f'{v} {k}' for k, v in kinds.items()) or '-'} "
            f"| {burst} | {s.longest_wait:.2f} s | {promo} | {s.lost} |"
        )
    head = (f"kill -9 of the master of slot 0, {CLIENTS} clients INCRing {KEYS} keys, "
            f"cluster-node-timeout {args.node_timeout_ms} ms, {args.duration:.0f} s per side, kill at {args.kill_at:.0f} s")
    return head + "\n\n" + "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slotproxy", type=Path, default=None, help="binary (default target/release/slotproxy)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--node-timeout-ms", type=int, default=3000)
    ap.add_argument("--duration", type=float, default=25.0, help="seconds of load per side")
    ap.add_argument("--kill-at", type=float, default=5.0, help="seconds into the load")
    ap.add_argument("--proxy-args", default="", help="extra slotproxy serve flags")
    args = ap.parse_args()

    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            log(f"{tool} not found: install Debian's redis-server and redis-tools packages")
            return 2
    if not args.no_build and args.slotproxy is None:
        log("cargo build --release")
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    slotproxy = (args.slotproxy or ROOT / "target" / "release" / "slotproxy").resolve()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    sides: list[Side] = []
    for name in ("slotproxy", "redis-py RedisCluster direct"):
        if name != "slotproxy" and redis is None:
            log("redis-py is not installed (pip install redis): no direct side")
            continue
        procs = compare.Procs()
        tmp = Path(tempfile.mkdtemp(prefix="slotproxy-failover-"))
        try:
            ports = start_cluster(procs, tmp, slotproxy, args.node_timeout_ms)
            pids = {port: p.pid for port, p in zip(ports, procs.started)}
            proxy_port = None
            if name == "slotproxy":
                proxy_port = compare.pick_port()
                argv = [str(slotproxy), "serve", "--listen", f"127.0.0.1:{proxy_port}", "--log-level", "warn",
                        *[a for p in ports for a in ("--seed", f"127.0.0.1:{p}")], *args.proxy_args.split()]
                p = procs.start(argv, tmp / "slotproxy.log")
                compare.wait_until("slotproxy to serve SET",
                                   lambda: p.poll() is None and compare.try_call(proxy_port, "SET", "x", "1") == "OK",
                                   20, 0.2)
            log(f"{name}: cluster on {ports[0]}..{ports[-1]}" + (f", slotproxy on {proxy_port}" if proxy_port else ""))
            sides.append(run_side(name, ports, proxy_port, args, procs, pids))
        finally:
            procs.stop_all()
            shutil.rmtree(tmp, ignore_errors=True)
    print(report(sides, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
