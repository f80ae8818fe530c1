"""Echo: a tiny page and a WebSocket endpoint that sends every message back.

    python examples/echo.py [--host 127.0.0.1] [--port 8000]

Then open http://127.0.0.1:8000/ in a browser. Under gunicorn:

    gunicorn -k gevent -b 127.0.0.1:8000 examples.echo:application
"""

from __future__ import annotations

from wsmiddleware import WS, WebSocketMiddleware

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>wsmiddleware echo</title>
<h1>Echo</h1>
<form id="f"><input id="m" autocomplete="off" autofocus placeholder="say something"> <button>Send</button></form>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/echo");
ws.onopen = () => log("connected");
ws.onmessage = (event) => log("< " + event.data);
ws.onclose = (event) => log("closed " + event.code);
document.getElementById("f").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("m");
  ws.send(input.value); log("> " + input.value); input.value = "";
};
</script>
"""


class Echo(WS):
    """Sends each text or binary message back to its sender."""

    def on_message(self, websocket, message):
        websocket.write(message)

    def on_bytes(self, websocket, data):
        websocket.write(data)


def page(environ, start_response):
    """The ordinary WSGI app the middleware wraps: one HTML page."""
    if environ.get("PATH_INFO", "/") != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))])
    return [PAGE]


application = WebSocketMiddleware(page, {"/ws/echo": Echo()})


def main(argv: list[str] | None = None) -> None:
    """Serve the example: ``[--host H] [--port P]``, default 127.0.0.1:8000."""
    from wsmiddleware.server import main as serve_main

    serve_main(application, argv, description=__doc__.splitlines()[0], label="echo example")


if __name__ == "__main__":
    main()
