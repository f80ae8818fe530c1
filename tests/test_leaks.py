"""No leaks: connect / echo / disconnect cycles, clean and abrupt, leave nothing behind.

File descriptors, greenlets and pub/sub subscriptions go back to their starting
counts; memory stays within a small bound. The suite runs 1,000 cycles per server
(bounded in time too); ``benchmarks/leak_check.py`` runs 10,000 and prints figures.
"""

import pytest

from tests.robust_apps import CYCLE_KINDS, run_cycles, settled, start

CYCLES = 1000
TIME_LIMIT = 60.0
MiB = 2**20


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def leak_server(request):
    server = start(request.param, "application")
    yield server
    server.stop()


def test_cycles_leave_nothing_behind(leak_server):
    # Warm up first: the first connections fill caches (imports, zlib, pools) for good.
    run_cycles(leak_server.port, 3 * len(CYCLE_KINDS), TIME_LIMIT)
    before = settled(leak_server)
    assert before["websockets"] == 0

    done = run_cycles(leak_server.port, CYCLES, TIME_LIMIT)
    assert done >= len(CYCLE_KINDS)  # every kind of ending ran at least once

    after = settled(leak_server)
    assert after["pid"] == before["pid"]
    assert after["websockets"] == 0
    assert after["keepalive"] == 0
    assert after["subscriptions"] == before["subscriptions"] == 0
    assert after["fds"] == before["fds"], (before, after)
    assert after["greenlets"] == before["greenlets"], (before, after)
    assert after["rss"] - before["rss"] < 8 * MiB, (before, after)
