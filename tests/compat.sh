#!/usr/bin/env bash
# Compatibility job: the core tests under other interpreters, versions and loops.
#
#   bash tests/compat.sh [lowest] [py313] [libuv] [-- pytest args...]
#
#   lowest  Python 3.10 (pyenv), the lowest declared versions: tests/constraints-lowest.txt
#   py313   Python 3.13 (pyenv), the newest versions (upgraded on every run)
#   libuv   Python 3.11, the main .venv, with GEVENT_LOOP=libuv
#
# With no configuration named, all three run side by side (they mostly wait on
# sockets and timers, so two cores carry them) and their logs are printed one after
# the other. Venvs .venv-compat-lowest/ and .venv-compat-313/ are created when missing
# and reused; each run re-installs what setup.cfg asks for, so a changed floor or pin
# takes effect. Exits non-zero when any run fails.
#
# Core tests: the files in CORE below, plus tests/unit/ when it exists. Only what
# they need is installed: install_requires and the gunicorn and gevent-websocket
# extras, read from setup.cfg, and the test extra's pytest, pytest-timeout, hypothesis
# and cffi; not redis, flask, pyramid or playwright, which no core test imports.
# The package itself is not installed (parallel editable builds in one tree would
# race): the tests import it from the work tree, as their server subprocesses do.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TMP_BASE=${TMPDIR:-/tmp}

CORE=(
    tests/test_connection.py
    tests/test_handshake.py
    tests/test_servers.py
    tests/test_parking.py
    tests/test_shutdown.py
    tests/conformance
)
[ -d tests/unit ] && CORE+=(tests/unit)

configs=()
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        lowest|py313|libuv) configs+=("$1"); shift ;;
        --) shift; pytest_args=("$@"); break ;;
        *) echo "tests/compat.sh: unknown configuration '$1' (lowest, py313, libuv)" >&2; exit 2 ;;
    esac
done
[ "${#configs[@]}" -gt 0 ] || configs=(lowest py313 libuv)
[ "${#pytest_args[@]}" -gt 0 ] || pytest_args=(-q -p no:cacheprovider)

die() { echo "tests/compat.sh: $*" >&2; exit 1; }

# The newest pyenv interpreter of one minor version, e.g. find_python 3.10.
find_python() {
    local minor=$1 root best="" candidate
    if command -v pyenv >/dev/null 2>&1; then root=$(pyenv root); else root=${PYENV_ROOT:-$HOME/.pyenv}; fi
    for candidate in "$root"/versions/"$minor".*/bin/python; do
        [ -x "$candidate" ] || continue
        # skip pyenv-virtualenv envs and dev builds: versions/3.10.13 only
        [[ "$candidate" =~ /versions/${minor//./\\.}\.[0-9]+/bin/python$ ]] || continue
        best=$(printf '%s\n%s\n' "$best" "$candidate" | sed '/^$/d' | sort -V | tail -n 1)
    done
    [ -n "$best" ] || die "no Python $minor found under $root/versions (install it: pyenv install $minor)"
    "$best" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$minor'.split('.')))" \
        || die "$best is not Python $minor"
    echo "$best"
}

# What the core tests need, from setup.cfg: install_requires + the gunicorn and
# gevent-websocket extras + the test extra's pytest, pytest-timeout, hypothesis and cffi
# (gevent's libuv loop, which unit tests use) lines.
requirements() {
    "$1" - <<'EOF'
import configparser
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
def lines(value):
    return [line.strip() for line in value.strip().splitlines() if line.strip() and not line.strip().startswith("#")]
extras = cfg["options.extras_require"]
reqs = lines(cfg["options"]["install_requires"]) + lines(extras["gunicorn"]) + lines(extras["gevent-websocket"])
reqs += [r for r in lines(extras["test"]) if r.split(">")[0].split("=")[0].strip() in ("pytest", "pytest-timeout", "hypothesis", "cffi")]
print("\n".join(reqs))
EOF
}

# make_venv DIR PYTHON PIP-ARGS...: create DIR when missing, install the requirements.
make_venv() {
    local dir=$1 py=$2; shift 2
    if [ ! -x "$dir/bin/python" ]; then
        echo "creating $dir with $py"
        "$py" -m venv "$dir"
        "$dir/bin/python" -m pip install -q --upgrade pip
    fi
    local reqs
    reqs=$(requirements "$dir/bin/python")
    mapfile -t reqs <<<"$reqs"
    "$dir/bin/python" -m pip install -q "$@" "${reqs[@]}"
    "$dir/bin/python" -m pip check || die "$dir: pip check failed"
}

versions() {
    "$1" - <<'EOF'
import sys
from importlib.metadata import version
names = ["gevent", "greenlet", "websockets", "WebOb", "gunicorn", "gevent-websocket", "pytest"]
print("Python " + sys.version.split()[0] + ": " + ", ".join(f"{n} {version(n)}" for n in names))
import gevent, wsmiddleware
print("gevent loop:", type(gevent.get_hub().loop).__module__, "; wsmiddleware from", wsmiddleware.__file__)
EOF
}

# run_tests PYTHON NAME: the core tests. Server logs (tests/support.py writes them to
# $TMPDIR) go to a directory of this run's own, kept for a look after a failure.
run_tests() {
    local py=$1 name=$2
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    export TMPDIR="$TMP_BASE/wsm-compat-$name"
    rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
    echo "server logs: $TMPDIR"
    versions "$py"
    "$py" -m pytest "${pytest_args[@]}" "${CORE[@]}"
}

run_lowest() {
    local py
    py=$(find_python 3.10)
    make_venv .venv-compat-lowest "$py" -c tests/constraints-lowest.txt
    # gunicorn < 25 has no control socket and rejects tests/conftest.py's default
    # GUNICORN_CMD_ARGS=--no-control-socket; conftest keeps a value that is set.
    GUNICORN_CMD_ARGS="${GUNICORN_CMD_ARGS-}" run_tests .venv-compat-lowest/bin/python lowest
}

run_py313() {
    local py
    py=$(find_python 3.13)
    make_venv .venv-compat-313 "$py" --upgrade --upgrade-strategy eager
    run_tests .venv-compat-313/bin/python py313
}

run_libuv() {
    local py=.venv/bin/python loop
    [ -x "$py" ] || die ".venv is missing: run 'bash tests/run.sh' first (it creates .venv with the test extras)"
    loop=$(GEVENT_LOOP=libuv "$py" -c "import gevent; print(type(gevent.get_hub().loop).__module__)") \
        || die "GEVENT_LOOP=libuv: gevent cannot load its libuv loop (is cffi installed in .venv?)"
    [ "$loop" = gevent.libuv.loop ] || die "GEVENT_LOOP=libuv gave a $loop loop, not libuv"
    GEVENT_LOOP=libuv run_tests "$py" libuv
}

if [ "${#configs[@]}" = 1 ]; then
    "run_${configs[0]}"
    exit
fi

logs=$(mktemp -d "$TMP_BASE/wsm-compat-logs.XXXXXX")
declare -A pids
echo "tests/compat.sh: running ${configs[*]} side by side"
for config in "${configs[@]}"; do
    # a background subshell keeps set -e in force inside run_* (a `run_x || rc=$?` would not)
    (
        start=$SECONDS
        trap 'echo "$((SECONDS - start))" >"$logs/$config.time"' EXIT
        "run_$config"
    ) >"$logs/$config.log" 2>&1 &
    pids[$config]=$!
done

failed=()
passed=()
for config in "${configs[@]}"; do
    rc=0
    wait "${pids[$config]}" || rc=$?
    echo
    echo "======== compat: $config (exit $rc, $(cat "$logs/$config.time" 2>/dev/null || echo '?') s) ========"
    cat "$logs/$config.log"
    if [ "$rc" = 0 ]; then passed+=("$config"); else failed+=("$config"); fi
done
rm -rf "$logs"

echo
echo "tests/compat.sh: configurations that passed: ${passed[*]:-none}; that failed: ${failed[*]:-none}"
[ "${#failed[@]}" = 0 ]
