"""What the package declares is what works: extras, licence."""

import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def extras() -> dict[str, list[Requirement]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    found = {}
    for name, value in cfg["options.extras_require"].items():
        found[name] = [Requirement(line) for line in value.strip().splitlines() if line.strip()]
    return found


def test_every_extra_that_brings_gunicorn_brings_what_its_gevent_worker_imports():
    # gunicorn 27's gevent worker imports `packaging`, which only gunicorn[gevent] installs.
    bringing = {name: [r for r in reqs if r.name == "gunicorn"] for name, reqs in extras().items()}
    bringing = {name: reqs for name, reqs in bringing.items() if reqs}
    assert "gunicorn" in bringing
    for name, reqs in bringing.items():
        assert all("gevent" in r.extras for r in reqs), f"extra {name!r}: {reqs}"


def test_the_gevent_worker_imports_in_the_test_environment():
    import gunicorn.workers.ggevent  # noqa: F401


def test_the_declared_licence_is_shipped():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["license"] == "MIT"
    assert cfg["metadata"]["license_files"].strip() == "LICENSE"
    text = (ROOT / "LICENSE").read_text()
    assert re.search(r"^MIT License", text, re.M) and "Permission is hereby granted" in text
