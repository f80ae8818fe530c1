"""PubSubWS recovery (subprotocol ``wsmiddleware.v1``) end to end, on pywsgi and
gunicorn, with an independent client (websockets' sync client)."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
import urllib.request

import pytest
from websockets.sync.client import connect

from .support import ServerProcess, start_server

APP = "tests.recovery_apps:application"
V1 = "wsmiddleware.v1"


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def server(request):
    started = start_server(request.param, app=APP)
    yield started
    started.stop()


def publish(server: ServerProcess, channel: str, count: int = 1, start: int = 1, **extra) -> None:
    query = urllib.parse.urlencode({"channel": channel, "count": count, "start": start, **extra})
    with urllib.request.urlopen(f"{server.http}/publish?{query}", timeout=30) as response:
        assert response.status == 200


def frames(ws, count: int, timeout: float = 10.0) -> list[dict]:
    return [json.loads(ws.recv(timeout=timeout)) for _ in range(count)]


def test_envelopes_recovery_first_then_positioned_messages(server):
    with connect(f"{server.url}/ws/h/env", subprotocols=[V1], open_timeout=10) as ws:
        assert ws.subprotocol == V1
        first = frames(ws, 1)[0]
        assert first == {"type": "recovery", "channel": "h:env", "recovered": None,
                         "epoch": first["epoch"], "offset": 0}
        publish(server, "h:env", 2)
        publish(server, "h:env", 1, start=3, binary=1)
        got = frames(ws, 3)
    assert got[0] == {"type": "message", "channel": "h:env", "epoch": first["epoch"], "offset": 1, "data": "m1"}
    assert got[1]["offset"] == 2 and got[1]["data"] == "m2"
    assert got[2]["offset"] == 3 and base64.b64decode(got[2]["data_b64"]) == (3).to_bytes(2, "big")
    assert "data" not in got[2]


def test_a_reconnect_gets_exactly_what_it_missed_then_live(server):
    with connect(f"{server.url}/ws/h/re", subprotocols=[V1], open_timeout=10) as ws:
        frames(ws, 1)
        publish(server, "h:re", 5)
        seen = frames(ws, 5)
    last = seen[2]  # as if the connection broke after m3
    publish(server, "h:re", 4, start=6)
    since = f"{last['epoch']}:{last['offset']}"
    with connect(f"{server.url}/ws/h/re?wsm_since={since}", subprotocols=[V1], open_timeout=10) as ws:
        answer = frames(ws, 1)[0]
        assert answer["recovered"] is True and answer["epoch"] == last["epoch"] and answer["offset"] == 9
        replay = frames(ws, 6)
        publish(server, "h:re", 1, start=10)
        live = frames(ws, 1)
    assert [f["data"] for f in replay] == ["m4", "m5", "m6", "m7", "m8", "m9"]
    assert [f["offset"] for f in replay] == [4, 5, 6, 7, 8, 9]
    assert live[0]["data"] == "m10" and live[0]["offset"] == 10


def test_the_seam_between_replay_and_live_under_concurrent_publishing(server):
    """Messages keep being published while clients reconnect at various points: each
    gets every message after its position once, in order."""
    with connect(f"{server.url}/ws/h/seam", subprotocols=[V1], open_timeout=10) as ws:
        epoch = frames(ws, 1)[0]["epoch"]
    publisher = threading.Thread(target=publish, args=(server, "h:seam", 40), kwargs={"pause": 0.005})
    publisher.start()
    results = []
    try:
        for since in (0, 2, 5, 9):
            with connect(f"{server.url}/ws/h/seam?wsm_since={epoch}:{since}", subprotocols=[V1],
                         open_timeout=10) as ws:
                answer = frames(ws, 1)[0]
                assert answer["recovered"] is True
                results.append((since, ws, [f["offset"] for f in frames(ws, 40 - since, timeout=20)]))
    finally:
        publisher.join(30)
    for since, _, offsets in results:
        assert offsets == list(range(since + 1, 41)), since


def test_a_gap_older_than_the_history_is_not_recovered_then_live(server):
    with connect(f"{server.url}/ws/h/gap", subprotocols=[V1], open_timeout=10) as ws:
        epoch = frames(ws, 1)[0]["epoch"]
    publish(server, "h:gap", 60)  # the history keeps 50
    for head, since in ((60, f"{epoch}:3"), (61, "other-epoch:59")):
        with connect(f"{server.url}/ws/h/gap?wsm_since={since}", subprotocols=[V1], open_timeout=10) as ws:
            answer = frames(ws, 1)[0]
            assert answer["recovered"] is False and answer["epoch"] == epoch and answer["offset"] == head
            publish(server, "h:gap", 1, start=head + 1)
            live = frames(ws, 1)[0]
            assert live["data"] == f"m{head + 1}" and live["offset"] == head + 1


def test_a_route_without_history_answers_not_recovered_and_unpositioned(server):
    with connect(f"{server.url}/ws/plain/x?wsm_since=abc:4", subprotocols=[V1], open_timeout=10) as ws:
        answer = frames(ws, 1)[0]
        assert answer == {"type": "recovery", "channel": "p:x", "recovered": False, "epoch": "", "offset": 0}
        publish(server, "p:x", 1, plain=1)
        assert frames(ws, 1)[0] == {"type": "message", "channel": "p:x", "epoch": None, "offset": None,
                                    "data": "m1"}


def test_clients_without_the_subprotocol_get_plain_messages(server):
    with connect(f"{server.url}/ws/h/plainclient", open_timeout=10) as ws:
        assert ws.subprotocol is None
        publish(server, "h:plainclient", 2)
        assert [ws.recv(timeout=10), ws.recv(timeout=10)] == ["m1", "m2"]
        ws.send("from me")
        assert ws.recv(timeout=10) == "from me"


def test_what_a_v1_client_sends_is_published_plainly(server):
    with connect(f"{server.url}/ws/h/send", subprotocols=[V1], open_timeout=10) as ws, \
            connect(f"{server.url}/ws/h/send", open_timeout=10) as plain:
        frames(ws, 1)
        ws.send("hello")
        ws.send(b"\x00\x01")
        assert plain.recv(timeout=10) == "hello" and plain.recv(timeout=10) == b"\x00\x01"
        own = frames(ws, 2)
        assert own[0]["data"] == "hello" and base64.b64decode(own[1]["data_b64"]) == b"\x00\x01"


def test_before_deliver_and_echo_false_apply_to_envelopes(server):
    with connect(f"{server.url}/ws/vetted/a", subprotocols=[V1], open_timeout=10) as ws:
        frames(ws, 1)
        publish(server, "v:a", 1)
        assert frames(ws, 1)[0]["data"] == "M1"
    with connect(f"{server.url}/ws/quiet/q", subprotocols=[V1], open_timeout=10) as quiet, \
            connect(f"{server.url}/ws/h/q", subprotocols=[V1], open_timeout=10) as other:
        frames(quiet, 1), frames(other, 1)
        quiet.send("not back to me")
        assert frames(other, 1)[0]["data"] == "not back to me"
        publish(server, "h:q", 1, start=7)
        assert frames(quiet, 1)[0]["data"] == "m7"


@pytest.mark.parametrize("since", ["nonsense", "epoch:", ":5", "e:-1", "e:1.5"])
def test_a_malformed_position_is_refused_with_400(server, since):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as caught:
        connect(f"{server.url}/ws/h/bad?wsm_since={urllib.parse.quote(since)}", subprotocols=[V1], open_timeout=10)
    assert caught.value.response.status_code == 400
    assert b"history position" in caught.value.response.body


def test_an_on_handshake_override_still_refuses_a_malformed_position(server):
    from websockets.exceptions import ConnectionClosed

    with connect(f"{server.url}/ws/own/o?wsm_since=nonsense", subprotocols=[V1], open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=10)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008
    assert "history position" in caught.value.rcvd.reason


def test_a_subclass_with_its_own_subprotocols_keeps_them(server):
    with connect(f"{server.url}/ws/chat/own", subprotocols=[V1, "chat"], open_timeout=10) as ws:
        assert ws.subprotocol == "chat"
        publish(server, "h:own", 1)
        assert ws.recv(timeout=10) == "m1"
