#!/usr/bin/env python3
"""HTTP/2 rapid reset (CVE-2023-44487) against the deployment
docs/SECURITY.md recommends: Debian's nghttpx in front of todo-query (its
libnghttp2 limits stream resets per connection). Two attackers each open
and reset 60000 streams as fast as they can while a well-behaved client
calls Health/Check through the same proxy. Deterministic, by counts: the
proxy must cut every attacker's connection (each reconnects), every one of
the client's calls must succeed, and todo-query must serve afterwards.

libgrpc 1.51 alone does not cut such a connection (bench/security/
rapid_reset.py measures that exposure; not in the gate: its outcome depends
on how the cores are shared).

usage: test_rapid_reset.py BIN_DIR (build/<tree>/src)
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "security"))
from rapid_reset import attack  # noqa: E402


def main():
    if not os.environ.get("TODO_STACK"):
        print("SKIP: no stack")
        return 0
    r = attack(sys.argv[1], attackers=2, proxy=True, streams_each=60000)
    print("through nghttpx: %d streams reset by 2 attackers on connections %s; client: %d calls, %d failed; "
          "server alive: %s" % (r["streams"], r["connections"], r["calls"], r["failures"], r["alive"]))
    ok = True
    if min(r["connections"]) < 2:
        print("FAIL: the proxy let an attacker reset 60000 streams on one connection")
        ok = False
    if r["failures"] or not r["alive"]:
        print("FAIL: the well-behaved client was refused or todo-query stopped serving")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
