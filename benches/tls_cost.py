#!/usr/bin/env python3
"""What TLS costs the proxy: requests per proxy CPU-second with TLS on the client side and with
TLS to the nodes, beside plain TCP, measured in one run; and the cost of a TLS handshake.

    python3 benches/tls_cost.py [--repeats 2] [--scale 1.0] [--no-build]

Starts a plain 3+3 cluster and a TLS 3+3 cluster (certificates made with openssl in a temp dir)
on free loopback ports, and three slotproxy processes with one worker each:

- `plain`: plain clients, plain nodes (the yardstick);
- `tls-client`: clients over TLS (`--tls-listen`, plain listener off), plain nodes;
- `tls-nodes`: plain clients, every node connection over TLS (`--node-tls`).

redis-benchmark (`--tls --cacert` for the TLS listener) runs GET and SET at -P 1 and -P 16 with 50
clients against each, alternating, and the proxy's CPU time comes from /proc/PID/stat. The
handshake run opens TLS connections to the `tls-client` proxy one after another for a few
seconds (PING, close) and reports connections per second and the proxy's CPU per handshake.
Every process it starts is stopped by PID and the temp dir removed on exit. Python 3.11
standard library; needs redis-server, redis-cli, redis-benchmark and openssl.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (the shared process, port and /proc helpers)

ROOT = compare.ROOT
CLK_TCK = compare.CLK_TCK


def make_certs(d: Path) -> dict[str, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca_key, ca, key, csr, crt = (d / n for n in ("ca.key", "ca.crt", "node.key", "node.csr", "node.crt"))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=bench-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=node")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return {"ca": ca, "cert": crt, "key": key}


def tls_cli(port: int, certs: dict[str, Path], *args: str, timeout: float = 5) -> str:
    r = subprocess.run(["redis-cli", "--tls", "--cacert", str(certs["ca"]), "-p", str(port), *args],
                       capture_output=True, text=True, timeout=timeout)
    return r.stdout.strip()


def start_tls_cluster(procs: compare.Procs, tmp: Path, certs: dict[str, Path]) -> list[int]:
    base = compare.pick_base_port()
    ports = list(range(base, base + 6))
    for port in ports:
        d = tmp / f"tls-node-{port}"
        d.mkdir()
        procs.start([
            "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(certs["cert"]), "--tls-key-file", str(certs["key"]),
            "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "no",
            "--tls-cluster", "yes", "--tls-replication", "yes",
            "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
            "--cluster-node-timeout", "5000", "--dir", str(d), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "no", "--logfile", str(d / "redis.log"),
        ], d / "stdout.log")
    for port in ports:
        compare.wait_until(f"TLS redis-server on {port}", lambda p=port: tls_cli(p, certs, "PING") == "PONG", 10)
    nodes = [f"127.0.0.1:{p}" for p in ports]
    r = subprocess.run(["redis-cli", "--tls", "--cacert", str(certs["ca"]), "--cluster", "create", *nodes,
                        "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"forming the TLS cluster failed:\n{r.stdout}\n{r.stderr}")
    compare.wait_until("TLS cluster_state:ok",
                       lambda: all("cluster_state:ok" in tls_cli(p, certs, "CLUSTER", "INFO") for p in ports), 60, 0.5)
    return ports


def start_proxy(procs: compare.Procs, tmp: Path, slotproxy: Path, name: str, seed: int,
                extra: list[str], certs: dict[str, Path]) -> tuple[object, int, bool]:
    port = compare.pick_port()
    tls_client = "--tls-listen" in extra
    listen = ["--listen", "off", "--tls-listen", f"127.0.0.1:{port}"] if tls_client else \
        ["--listen", f"127.0.0.1:{port}"]
    extra = [a for a in extra if a != "--tls-listen"]
    argv = [str(slotproxy), "serve", *listen, "--seed", f"127.0.0.1:{seed}", "--log-level", "warn",
            "--worker-threads", "1", *extra]
    p = procs.start(argv, tmp / f"slotproxy-{name}.log")

    def ready() -> bool:
        if p.poll() is not None:
            raise RuntimeError(f"slotproxy {name} exited:\n" + (tmp / f"slotproxy-{name}.log").read_text()[-3000:])
        if tls_client:
            return tls_cli(port, certs, "SET", "tls:ready", "1") == "OK"
        return compare.try_call(port, "SET", "tls:ready", "1") == "OK"

    compare.wait_until(f"slotproxy {name} to serve SET", ready, 30, 0.2)
    return p, port, tls_client


def bench(port: int, tls: bool, certs: dict[str, Path], test: str, pipeline: int, n: int, pid: int) -> tuple[float, float]:
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-P", str(pipeline),
            "-n", str(n), "-r", str(compare.KEYSPACE), "-t", test, "--csv"]
    if tls:
        argv += ["--tls", "--cacert", str(certs["ca"])]
    t0 = compare.cpu_ticks(pid)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=compare.RUN_TIMEOUT)
    cpu = (compare.cpu_ticks(pid) - t0) / CLK_TCK
    if r.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed ({' '.join(argv)}):\n{r.stdout}\n{r.stderr}")
    rps, _, _ = compare.parse_csv(r.stdout)
    return rps, n / cpu if cpu > 0 else float("inf")


def handshakes(port: int, certs: dict[str, Path], pid: int, seconds: float) -> tuple[float, float]:
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    count = 0
    t0, c0 = time.monotonic(), compare.cpu_ticks(pid)
    while time.monotonic() - t0 < seconds:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if not s.recv(64).startswith(b"+PONG"):
                    raise RuntimeError("no PONG over TLS")
        count += 1
    secs = time.monotonic() - t0
    cpu = (compare.cpu_ticks(pid) - c0) / CLK_TCK
    return count / secs, cpu * 1e6 / count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    slotproxy = ROOT / "target" / "release" / "slotproxy"
    procs = compare.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="slotproxy-tls-bench-"))
    try:
        certs = make_certs(tmp)
        plain = compare.start_cluster(procs, tmp, slotproxy)
        tls_ports = start_tls_cluster(procs, tmp, certs)
        ca = str(certs["ca"])
        proxies = {
            "plain": start_proxy(procs, tmp, slotproxy, "plain", plain.ports[0], [], certs),
            "tls-client": start_proxy(procs, tmp, slotproxy, "tls-client", plain.ports[0],
                                      ["--tls-listen", "--tls-cert-file", str(certs["cert"]),
                                       "--tls-key-file", str(certs["key"])], certs),
            "tls-nodes": start_proxy(procs, tmp, slotproxy, "tls-nodes", tls_ports[0],
                                     ["--node-tls", "--node-tls-ca-file", ca], certs),
        }
        cases = [(t, p, int((100_000 if p == 1 else 400_000) * args.scale)) for p in (1, 16) for t in ("get", "set")]
        results: dict[tuple, list[tuple[float, float]]] = {}
        for rep in range(args.repeats):
            for test, pipeline, n in cases:
                for name, (proc, port, tls) in proxies.items():
                    r = bench(port, tls, certs, test, pipeline, n, proc.pid)
                    results.setdefault((test, pipeline, name), []).append(r)
                    compare.log(f"{test.upper()} -P {pipeline} {name} #{rep + 1}: {r[0]:,.0f} req/s, {r[1]:,.0f} req per proxy CPU-s")
        lines = [
            f"TLS cost, {time.strftime('%Y-%m-%d %H:%M')} on {compare.machine()}, "
            f"redis-benchmark -c 50, median of {args.repeats}, one worker per proxy",
            "",
            "| case | proxy | req/s | req per proxy CPU-s | proxy CPU per request vs plain |",
            "|---|---|---:|---:|---:|",
        ]
        for test, pipeline, _ in cases:
            base = statistics.median(r[1] for r in results[(test, pipeline, "plain")])
            for name in proxies:
                rs = results[(test, pipeline, name)]
                rps = statistics.median(r[0] for r in rs)
                per_cpu = statistics.median(r[1] for r in rs)
                lines.append(f"| {test.upper()} -P {pipeline} | {name} | {rps:,.0f} | {per_cpu:,.0f} | {base / per_cpu:.2f}x |")
        proc, port, _ = proxies["tls-client"]
        rate, cpu_us = handshakes(port, certs, proc.pid, 5 * args.scale)
        lines += ["", f"TLS handshakes (one Python client, sequential, PING each): {rate:,.0f} new connections/s, "
                  f"{cpu_us:,.0f} µs of proxy CPU per handshake"]
        print("\n".join(lines))
        return 0
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
