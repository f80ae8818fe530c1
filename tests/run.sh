#!/usr/bin/env bash
# Install what the test suite needs on a fresh machine, then run the whole suite.
#   bash tests/run.sh [pytest args...]
# Creates .venv (if missing), installs the package with its test extras, installs
# redis-server and chromium through apt-get when missing, then runs pytest.
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "tests/run.sh: need root (or sudo) to run: $*" >&2; return 1; fi
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]} with apt-get"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
rm -f .venv/.wsm-installed
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# Tells a compatibility job waiting for .venv (the libuv run of .ci/run) that it is whole.
touch .venv/.wsm-installed

exec .venv/bin/python -m pytest "$@"
