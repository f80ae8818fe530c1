#!/usr/bin/env python3
"""10,000 connect / echo / disconnect cycles per server, then what the server still holds.

    python benchmarks/leak_check.py [--cycles 10000] [--servers pywsgi,gunicorn]

Each server (gevent.pywsgi, gunicorn -k gevent; one process each) serves
``tests.robust_apps:application``. The cycles mix every way a connection ends:
closing handshake, bare FIN, reset, reset inside a frame, handshake without frames,
pub/sub room subscribers (clean and reset), permessage-deflate, a refused handshake,
and a close frame followed by a reset. Before and after, the server's
``/debug/counts`` gives file descriptors, live greenlets, open WebSockets, keepalive
registrations, pub/sub subscriptions and resident memory. The script prints a
table and exits non-zero if a count did not come back to its starting value or
memory grew by more than ``--rss-bound`` MiB. Every process it starts is stopped
by pid.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.robust_apps import CYCLE_KINDS, run_cycles, settled, start  # noqa: E402

MiB = 2**20


def check(kind: str, cycles: int, rss_bound: float) -> bool:
    server = start(kind, "application")
    try:
        run_cycles(server.port, 5 * len(CYCLE_KINDS), 60)
        before = settled(server)
        started = time.monotonic()
        done = run_cycles(server.port, cycles, 3600)
        elapsed = time.monotonic() - started
        after = settled(server)
    finally:
        server.stop()
    ok = (
        done == cycles
        and after["pid"] == before["pid"]
        and after["websockets"] == after["keepalive"] == 0
        and after["fds"] == before["fds"]
        and after["greenlets"] == before["greenlets"]
        and after["subscriptions"] == before["subscriptions"]
        and after["rss"] - before["rss"] <= rss_bound * MiB
    )
    print(f"\n{kind}: {done} cycles in {elapsed:.1f} s ({done / elapsed:.0f} cycles/s), "
          f"{len(CYCLE_KINDS)} kinds of ending: {', '.join(CYCLE_KINDS)}")
    print(f"  {'':14} {'before':>12} {'after':>12} {'change':>12}")
    for key in ("fds", "greenlets", "websockets", "keepalive", "subscriptions"):
        b, a = before[key], after[key]
        change = "n/a" if b is None or a is None else f"{a - b:+d}"
        print(f"  {key:14} {b!s:>12} {a!s:>12} {change:>12}")
    print(f"  {'rss (MiB)':14} {before['rss'] / MiB:>12.1f} {after['rss'] / MiB:>12.1f} "
          f"{(after['rss'] - before['rss']) / MiB:>+12.2f}")
    print(f"  {'peak rss (MiB)':14} {before['peak_rss'] / MiB:>12.1f} {after['peak_rss'] / MiB:>12.1f}")
    print(f"  result: {'OK' if ok else 'LEAK'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--servers", default="pywsgi,gunicorn")
    parser.add_argument("--rss-bound", type=float, default=8.0, help="allowed memory growth, MiB")
    args = parser.parse_args()
    results = [check(kind, args.cycles, args.rss_bound) for kind in args.servers.split(",")]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
