"""Message routing: a shared notes board speaking JSON over one WebSocket.

    python examples/rpc.py [--host 127.0.0.1] [--port 8000]

Then open http://127.0.0.1:8000/ in two browser tabs. Each JSON message names
its ``type``; methods registered with ``@on(...)`` answer requests that carry
an ``id``, and every client hears ``note_added`` / ``note_deleted`` events::

    -> {"type": "add", "id": 1, "text": "buy milk"}
    <- {"type": "note_added", "note": {"id": 1, "text": "buy milk"}}     (to everyone)
    <- {"type": "result", "id": 1, "result": {"id": 1, "text": "buy milk"}}
    -> {"type": "delete", "id": 2, "note": 99}
    <- {"type": "error", "id": 2, "error": {"code": "not_found", "message": "no note 99"}}
"""

from __future__ import annotations

import itertools
import json

from wsmiddleware import ConnectionClosed, WebSocketMiddleware
from wsmiddleware.rpc import MessageError, MessageRouter, on

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>wsmiddleware notes</title>
<h1>Notes</h1>
<form id="f"><input id="text" autocomplete="off" autofocus placeholder="a note"> <button>Add</button></form>
<ul id="notes"></ul>
<pre id="log"></pre>
<script>
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/notes");
let nextId = 1;
const pending = new Map();
const call = (type, fields) => new Promise((resolve, reject) => {
  const id = nextId++;
  pending.set(id, {resolve, reject});
  ws.send(JSON.stringify({type, id, ...fields}));
});
const render = (notes) => {
  const list = document.getElementById("notes");
  list.innerHTML = "";
  for (const note of notes) {
    const item = document.createElement("li");
    item.textContent = note.text + " ";
    const del = document.createElement("button");
    del.textContent = "x";
    del.onclick = () => call("delete", {note: note.id});
    item.appendChild(del);
    list.appendChild(item);
  }
};
let notes = [];
ws.onopen = () => call("list", {}).then((all) => { notes = all; render(notes); });
ws.onmessage = (event) => {
  const message = JSON.parse(event.data);
  if (message.type === "result" && pending.has(message.id)) { pending.get(message.id).resolve(message.result); pending.delete(message.id); }
  else if (message.type === "error") { document.getElementById("log").textContent = message.error.message; if (pending.has(message.id)) { pending.get(message.id).reject(message.error); pending.delete(message.id); } }
  else if (message.type === "note_added") { notes.push(message.note); render(notes); }
  else if (message.type === "note_deleted") { notes = notes.filter((n) => n.id !== message.note); render(notes); }
};
document.getElementById("f").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  call("add", {text: input.value}).catch(() => {});
  input.value = "";
};
</script>
"""

MAX_NOTE = 500


class Notes(MessageRouter):
    """One shared instance: the notes and the connected clients live on it."""

    def __init__(self) -> None:
        self.notes: dict[int, str] = {}
        self.ids = itertools.count(1)
        self.clients: set = set()

    def on_open(self, websocket):
        self.clients.add(websocket)

    def on_close(self, websocket):
        self.clients.discard(websocket)

    def broadcast(self, message_type: str, **fields) -> None:
        encoded = self.dumps({self.type_field: message_type, **fields})
        for client in list(self.clients):
            try:
                client.write(encoded)
            except ConnectionClosed:
                self.clients.discard(client)

    @on("list")
    def list_notes(self, websocket, message):
        return [{"id": key, "text": text} for key, text in self.notes.items()]

    @on("add")
    def add(self, websocket, message):
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise MessageError("a note needs some text", code="invalid")
        if len(text) > MAX_NOTE:
            raise MessageError(f"a note has at most {MAX_NOTE} characters", code="invalid")
        note = {"id": next(self.ids), "text": text.strip()}
        self.notes[note["id"]] = note["text"]
        self.broadcast("note_added", note=note)
        return note

    @on("delete")
    def delete(self, websocket, message):
        key = message.get("note")
        if key not in self.notes:
            raise MessageError(f"no note {key}", code="not_found")
        del self.notes[key]
        self.broadcast("note_deleted", note=key)
        return {"deleted": key}


def page(environ, start_response):
    """The plain WSGI app the middleware wraps: the page, and the notes as JSON."""
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        body, content_type = PAGE, "text/html; charset=utf-8"
    elif path == "/notes.json":
        body, content_type = json.dumps(notes.notes).encode(), "application/json"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


notes = Notes()
application = WebSocketMiddleware(page, {"/ws/notes": notes})


def main(argv: list[str] | None = None) -> None:
    """Serve the example: ``[--host H] [--port P]``, default 127.0.0.1:8000."""
    from wsmiddleware.server import main as serve_main

    serve_main(application, argv, description=__doc__.splitlines()[0], label="notes example")


if __name__ == "__main__":
    main()
