"""Every Python snippet in README.md runs as written.

Each block is imported as a module in a fresh interpreter (so ``if __name__ ==
"__main__"`` servers stay off) and the ``test_*`` functions it defines are called.
Snippets that talk to ``127.0.0.1:8000`` get the echo example on a free port instead.
"""

import re
import subprocess
import sys
import textwrap

import pytest

from .support import PYTHON, ROOT, ServerProcess, free_port

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)

RUNNER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("snippet", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
for name, value in list(vars(module).items()):
    if name.startswith("test_") and callable(value):
        value()
print("snippet ok")
"""


@pytest.fixture(scope="module")
def echo_example():
    port = free_port()
    server = ServerProcess([PYTHON, str(ROOT / "examples" / "echo.py"), "--port", str(port)], port,
                           name="readme-echo")
    yield server
    server.stop()


def test_readme_has_snippets():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index, tmp_path, echo_example):
    code = textwrap.dedent(BLOCKS[index]).replace("127.0.0.1:8000", f"127.0.0.1:{echo_example.port}")
    path = tmp_path / f"snippet_{index}.py"
    path.write_text(code)
    result = subprocess.run([sys.executable, "-c", RUNNER, str(path)], cwd=str(ROOT), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"README snippet {index} failed:\n{code}\n{result.stdout}\n{result.stderr}"
    assert "snippet ok" in result.stdout


def test_readme_redis_cli_publish_reaches_the_chat_example():
    """Each ``redis-cli PUBLISH CHANNEL`` of the README names a channel of ``examples/chat.py``."""
    from examples.chat import ROOM, ChatRoom
    from wsmiddleware.pubsub import MemoryPubSub

    template = ChatRoom(MemoryPubSub()).channel
    prefix, _, rest = template.partition("{room}")
    channels = re.findall(r"redis-cli PUBLISH (\S+)", (ROOT / "README.md").read_text())
    assert channels, "the README shows no redis-cli PUBLISH"
    for channel in channels:
        assert channel.startswith(prefix) and channel.endswith(rest), (channel, template)
        assert ROOM.match(channel[len(prefix):len(channel) - len(rest)]), channel
