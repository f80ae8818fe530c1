"""A real browser: headless Chromium (Debian's package) driven by Playwright against the examples.

Needs /usr/bin/chromium (``apt-get install chromium``) and the ``playwright``
Python package; Playwright's own browser download is not used.
"""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect, sync_playwright

from .support import PYTHON, ROOT, ServerProcess, free_port

CHROMIUM = os.environ.get("WSM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield chromium
        chromium.close()


def start_example(name: str, env: dict[str, str] | None = None) -> ServerProcess:
    port = free_port()
    return ServerProcess([PYTHON, str(ROOT / "examples" / f"{name}.py"), "--port", str(port)], port,
                         env=env, name=f"browser-{name}")


@pytest.fixture
def new_page(browser):
    """Pages in separate browser contexts: separate cookies, like separate people."""
    contexts = []

    def make():
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


# -- the chat with rooms (examples/chat.py) -------------------------------------------------------


@pytest.fixture(scope="module")
def chat_server():
    server = start_example("chat")
    yield server
    server.stop()


class ChatPage:
    """One person in examples/chat.py's page, driven through its form like a user would."""

    def __init__(self, page, base_url: str, room: str, name: str) -> None:
        self.page, self.room, self.name = page, room, name
        page.goto(base_url + "/")
        page.fill("#name", name)
        page.fill("#room", room)
        page.click("#join button")

    def wait_connected(self) -> None:
        expect(self.page.locator("#where")).to_have_text("#" + self.room)
        expect(self.page.locator("#text")).to_be_enabled()

    def say(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")

    def expect_line(self, text: str) -> None:
        expect(self.page.locator("#log")).to_contain_text(text)

    def lines(self) -> str:
        return self.page.inner_text("#log")


def test_chat_rooms_in_a_real_browser(chat_server, new_page):
    alice = ChatPage(new_page(), chat_server.http, room="lobby", name="alice")
    alice.wait_connected()
    bob = ChatPage(new_page(), chat_server.http, room="lobby", name="bob")
    bob.wait_connected()
    carol = ChatPage(new_page(), chat_server.http, room="kitchen", name="carol")
    carol.wait_connected()
    alice.expect_line("bob joined")

    alice.say("hello from alice")
    bob.say("hi alice, bob here")
    # Same room: each sees the other's messages, and its own.
    for person in (alice, bob):
        person.expect_line("alice: hello from alice")
        person.expect_line("bob: hi alice, bob here")

    carol.say("anyone in the kitchen?")
    carol.expect_line("carol: anyone in the kitchen?")
    alice.say("last one from the lobby")
    bob.expect_line("alice: last one from the lobby")
    carol.say("kitchen closing")
    carol.expect_line("carol: kitchen closing")
    # By now every lobby message has reached the lobby; none reached the kitchen, and back.
    kitchen = carol.lines()
    for text in ("alice", "bob", "hello from alice", "hi alice", "last one from the lobby"):
        assert text not in kitchen, kitchen
    for person in (alice, bob):
        assert "kitchen" not in person.lines()
        assert "carol" not in person.lines()
    assert "Traceback" not in chat_server.log()


# -- the other examples' pages -------------------------------------------------------------------


def test_notes_page_shares_notes_between_two_browsers(new_page):
    server = start_example("rpc")
    try:
        first, second = new_page(), new_page()
        for page in (first, second):
            page.goto(server.http + "/")
        first.fill("#text", "written in the first browser")
        first.click("text=Add")
        expect(second.locator("#notes li")).to_have_text(["written in the first browser x"])
        expect(first.locator("#notes li")).to_have_count(1)
        second.click("#notes li button")
        expect(first.locator("#notes li")).to_have_count(0)
        expect(second.locator("#notes li")).to_have_count(0)
    finally:
        server.stop()


def test_flask_login_session_authorises_the_browser_websocket(new_page, tmp_path):
    server = start_example("flask_app", env={"FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'chat.sqlite3'}"})
    try:
        alice, bob = new_page(), new_page()
        for page, name in ((alice, "alice"), (bob, "bob")):
            page.goto(server.http + "/")
            page.fill("input[name=name]", name)
            page.click("text=Log in")
            expect(page.locator("#me")).to_have_text(name)
        expect(alice.locator("#log")).to_contain_text("* bob joined")
        bob.fill("#m", "hello from bob's browser")
        bob.press("#m", "Enter")
        expect(alice.locator("#log")).to_contain_text("bob: hello from bob's browser")
        # A browser without the session cookie is refused during the handshake.
        stranger = new_page()
        stranger.goto(server.http + "/")
        closed_code = stranger.evaluate("""() => new Promise((resolve) => {
            const ws = new WebSocket("ws://" + location.host + "/ws/room/lobby");
            ws.onopen = () => resolve("opened");
            ws.onclose = (event) => resolve(event.code);
        })""")
        assert closed_code == 1006  # what browsers report for a refused handshake
        assert "401" in server.log() and "/ws/room" in server.log()
    finally:
        server.stop()


def test_ticker_page_receives_pushed_ticks(new_page):
    server = start_example("ticker")
    try:
        page = new_page()
        page.goto(server.http + "/")
        expect(page.locator("#log")).to_contain_text("tick 2 at")
        page.fill("#interval", "0.05")
        page.click("#set")
        expect(page.locator("#log")).to_contain_text("tick 10 at")
        ticks = page.evaluate("""() => new Promise((resolve) => {
            const ws = new WebSocket("ws://" + location.host + "/ws/ticker?interval=0.01");
            const seen = [];
            ws.onmessage = (event) => { seen.push(JSON.parse(event.data).tick); if (seen.length === 5) { ws.close(); resolve(seen); } };
        })""")
        assert ticks == [1, 2, 3, 4, 5]
    finally:
        server.stop()
