import uuid

import pytest

from wsmiddleware.routing import Router, compile_template


def test_plain_template_matches_exactly():
    router = Router()
    router.add("/ws/echo", "echo")
    assert router.match("/ws/echo")[1] == {}
    assert router.match("/ws/echo/") is None
    assert router.match("/ws/echoes") is None


def test_named_segments_and_converters():
    router = Router()
    router.add("/rooms/{room}/items/{id:int}", "h")
    route, url_vars = router.match("/rooms/lobby/items/42")
    assert url_vars == {"room": "lobby", "id": 42}
    assert router.match("/rooms/lobby/items/x") is None
    assert router.match("/rooms/a/b/items/1") is None


def test_path_float_uuid_converters():
    router = Router()
    router.add("/files/{rest:path}", "files")
    router.add("/v/{x:float}", "v")
    router.add("/u/{u:uuid}", "u")
    assert router.match("/files/a/b/c.txt")[1] == {"rest": "a/b/c.txt"}
    assert router.match("/v/1.5")[1] == {"x": 1.5}
    value = uuid.uuid4()
    assert router.match(f"/u/{value}")[1] == {"u": value}


def test_first_route_wins():
    router = Router()
    router.add("/a/{x}", "first")
    router.add("/a/b", "second")
    assert router.match("/a/b")[0].handler == "first"


def test_regex_characters_in_templates_are_literal():
    regex, _ = compile_template("/a.b/(x)")
    assert regex.match("/a.b/(x)")
    assert not regex.match("/aXb/(x)")


@pytest.mark.parametrize("bad", ["no-slash", "/{x:nope}", "/{x}/{x}"])
def test_invalid_templates_raise(bad):
    with pytest.raises(ValueError):
        compile_template(bad)
