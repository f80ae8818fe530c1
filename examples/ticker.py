"""Ticker: server push with the producer pattern (``websocket.spawn``).

    python examples/ticker.py [--host 127.0.0.1] [--port 8000]

Then open http://127.0.0.1:8000/ in a browser. Each connection gets its own
producer greenlet that writes a tick on a timer; the greenlet is killed when
the connection ends, so nothing keeps running for a client that left.
``/ws/ticker?interval=0.5`` picks the period (0.01 to 60 s); sending
``{"interval": 2}`` changes it while connected.
"""

from __future__ import annotations

import json
import time

import gevent
import gevent.event

from wsmiddleware import WS, WebSocketMiddleware

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>wsmiddleware ticker</title>
<h1>Ticker</h1>
<p>Interval <input id="interval" type="number" value="1" min="0.01" step="0.1"> s <button id="set">Set</button></p>
<pre id="log"></pre>
<script>
const log = (line) => { const el = document.getElementById("log"); el.textContent = line + "\\n" + el.textContent; };
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/ticker");
ws.onmessage = (event) => { const tick = JSON.parse(event.data); log("tick " + tick.tick + " at " + new Date(tick.time * 1000).toISOString()); };
ws.onclose = (event) => log("closed " + event.code);
document.getElementById("set").onclick = () => ws.send(JSON.stringify({interval: Number(document.getElementById("interval").value)}));
</script>
"""

MIN_INTERVAL, MAX_INTERVAL = 0.01, 60.0


def _interval(value: object, default: float = 1.0) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return min(MAX_INTERVAL, max(MIN_INTERVAL, seconds))


class Ticker(WS):
    """Pushes ``{"tick": n, "time": t}`` every interval until the client leaves."""

    def on_open(self, websocket):
        websocket.state["interval"] = _interval(websocket.request.GET.get("interval"))
        # Set when the interval changes, so a long sleep is cut short.
        websocket.state["changed"] = gevent.event.Event()
        websocket.spawn(self.produce, websocket)

    def produce(self, websocket):
        """The producer greenlet: killed by the connection when it ends."""
        changed = websocket.state["changed"]
        n = 0
        while True:
            n += 1
            websocket.write(json.dumps({"tick": n, "time": time.time(), "interval": websocket.state["interval"]}))
            changed.wait(websocket.state["interval"])
            changed.clear()

    def on_message(self, websocket, message):
        try:
            requested = json.loads(message).get("interval")
        except (ValueError, AttributeError):
            websocket.write(json.dumps({"error": 'send {"interval": seconds}'}))
            return
        websocket.state["interval"] = _interval(requested, websocket.state["interval"])
        websocket.state["changed"].set()


def page(environ, start_response):
    """The plain WSGI app the middleware wraps: one HTML page."""
    if environ.get("PATH_INFO", "/") != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))])
    return [PAGE]


application = WebSocketMiddleware(page, {"/ws/ticker": Ticker()})


def main(argv: list[str] | None = None) -> None:
    """Serve the example: ``[--host H] [--port P]``, default 127.0.0.1:8000."""
    from wsmiddleware.server import main as serve_main

    serve_main(application, argv, description=__doc__.splitlines()[0], label="ticker example")


if __name__ == "__main__":
    main()
