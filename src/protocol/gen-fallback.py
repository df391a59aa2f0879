#!/usr/bin/env python3
"""Regenerates commands-redis-<version>.resp: the raw RESP2 reply of `COMMAND` from a throwaway
redis-server, which `CommandTable::fallback()` embeds with include_bytes!.

Usage (from the repository root):
    python3 src/protocol/gen-fallback.py [redis-server binary]

Starts redis-server on a unix socket only (no TCP port), captures the reply, checks it parses
as one complete RESP value, writes the file next to this script and stops the server by its pid.
"""
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOCK = "/tmp/cmd-gen.sock"
PIDFILE = "/tmp/cmd-gen.pid"


def parse(buf, i=0, depth=0):
    """Returns the end offset of the RESP2 value starting at i, or None if incomplete."""
    if depth > 32:
        raise ValueError("nesting too deep")
    if i >= len(buf):
        return None
    nl = buf.find(b"\r\n", i)
    if nl < 0:
        return None
    kind, line = buf[i:i + 1], buf[i + 1:nl]
    i = nl + 2
    if kind in (b"+", b"-", b":"):
        return i
    if kind == b"$":
        n = int(line)
        if n < 0:
            return i
        return i + n + 2 if len(buf) >= i + n + 2 else None
    if kind == b"*":
        for _ in range(max(int(line), 0)):
            i = parse(buf, i, depth + 1)
            if i is None:
                return None
        return i
    raise ValueError("unexpected type byte %r" % kind)


def main():
    server = sys.argv[1] if len(sys.argv) > 1 else "redis-server"
    version = subprocess.run([server, "--version"], capture_output=True, text=True, check=True)
    version = version.stdout.split("v=")[1].split()[0]
    subprocess.run([server, "--port", "0", "--unixsocket", SOCK, "--save", "",
                    "--appendonly", "no", "--daemonize", "yes", "--pidfile", PIDFILE], check=True)
    try:
        for _ in range(100):
            if os.path.exists(SOCK) and os.path.exists(PIDFILE):
                break
            time.sleep(0.05)
        s = socket.socket(socket.AF_UNIX)
        s.connect(SOCK)
        s.sendall(b"*1\r\n$7\r\nCOMMAND\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed before the reply was complete")
            buf += chunk
            end = parse(buf)
            if end is not None:
                break
        if end != len(buf):
            raise SystemExit("trailing bytes after the reply")
        s.close()
        out = os.path.join(HERE, "commands-redis-%s.resp" % version)
        with open(out, "wb") as f:
            f.write(buf)
        print("wrote %s (%d bytes)" % (out, len(buf)))
    finally:
        with open(PIDFILE) as f:
            pid = int(f.read().strip())
        os.kill(pid, 15)


if __name__ == "__main__":
    main()
