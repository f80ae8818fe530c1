#!/usr/bin/env python3
"""Benchmark wsmiddleware against other Python WebSocket stacks, in one run, on loopback.

    python benchmarks/run.py [--quick] [--scenarios echo-small,fanout-1000] [--servers wsm,websockets]
                             [--repeats N] [--client auto|ws|lean] [--json PATH]

Every scenario runs against wsmiddleware and the anchors (gevent-websocket 0.10.1,
simple-websocket, the websockets library's asyncio server, and a raw gevent TCP echo
as the ceiling), each measurement on a freshly started server, driven by a Node.js
load generator in its own process: the ``ws`` package, or where one core of it would
be the bottleneck (large echoes, fan-out subscribers) a lean client of its own; each
table names its client. Server and load generator are pinned to different CPUs when
``taskset`` is there. The script prints a table and writes a JSON file of medians
(with min and max over the repeats) and of the ratio of wsmiddleware to each anchor.
It installs what it needs by itself (``npm ci`` for the load generator, the ``bench``
extra of setup.cfg for the anchors) and stops every process it started, by pid.
"""

from __future__ import annotations

import argparse
import configparser
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
sys.path.insert(0, str(ROOT))

from benchmarks import procs  # noqa: E402

RESULTS = HERE / "results"
LOGS = RESULTS / "logs"

# -- servers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    id: str
    label: str
    anchor: bool  # a stack wsmiddleware is compared with
    modules: tuple[str, ...] = ()  # Python modules it needs
    ws: bool = True  # False: raw TCP, no WebSocket framing


SERVERS = {
    s.id: s
    for s in [
        Server("wsm", "wsmiddleware / gevent.pywsgi", False),
        Server("wsm-gunicorn", "wsmiddleware / gunicorn -k gevent", False, ("gunicorn",)),
        Server("gws", "gevent-websocket 0.10.1 / pywsgi", True, ("geventwebsocket",)),
        Server("simple", "simple-websocket / pywsgi", True, ("simple_websocket",)),
        Server("websockets", "websockets / asyncio", True, ("websockets",)),
        Server("raw-tcp", "raw gevent TCP, no framing (ceiling)", False, (), ws=False),
    ]
}
WSM = "wsm"


def server_argv(server_id: str, port: int, workers: int = 1) -> list[str]:
    if server_id == "wsm-gunicorn":
        gunicorn = str(Path(PYTHON).parent / "gunicorn")
        return [gunicorn, "-k", "gevent", "-w", str(workers), "--worker-connections", "30000",
                "-b", f"127.0.0.1:{port}", "--backlog", "1024", "--log-level", "warning",
                "--graceful-timeout", "2", "benchmarks.apps:application"]
    kind = {"wsm": "wsm-pywsgi", "gws": "gws-pywsgi", "simple": "simple-pywsgi",
            "websockets": "websockets-asyncio", "raw-tcp": "raw-tcp"}[server_id]
    return [PYTHON, str(HERE / "serve.py"), kind, str(port)]


# -- scenarios -------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str  # "higher" or "lower"
    fmt: str = "{:,.0f}"


@dataclass
class Scenario:
    name: str
    title: str
    mode: str
    servers: tuple[str, ...]
    params: dict[str, Any]
    quick: dict[str, Any]
    metrics: tuple[Metric, ...]
    extract: Callable[[dict[str, Any], dict[str, Any]], dict[str, float]]
    timeout_s: float = 120.0
    # The load generator's WebSocket client: "ws" (the npm package), or "lean"
    # (loadgen.js openLean) where a single core of `ws` would cap every server alike.
    # A fan-out's publisher is a `ws` client either way.
    client: str = "ws"

    def config(self, quick: bool) -> dict[str, Any]:
        return {**self.params, **(self.quick if quick else {})}


ALL_WS = ("wsm", "wsm-gunicorn", "gws", "simple", "websockets")
CPU_METRICS = (Metric("server_cpu_pct", "server CPU %", "lower"), Metric("client_cpu_pct", "client CPU %", "lower"))


def _cpu(m: dict[str, Any]) -> dict[str, float]:
    wall = max(m["wall_s"], 1e-9)
    return {"server_cpu_pct": 100 * m["server_cpu_s"] / wall, "client_cpu_pct": 100 * m["client_cpu_s"] / wall}


def _echo(r: dict[str, Any], m: dict[str, Any]) -> dict[str, float]:
    return {"rate": r["rate"], "mib_s": r["mib_s"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "cpu_us_per_rt": 1e6 * m["server_cpu_s"] / max(r["round_trips"], 1), **_cpu(m)}


def _fanout(r: dict[str, Any], m: dict[str, Any]) -> dict[str, float]:
    if r["delivered"] < r["expected"]:
        raise RuntimeError(f"only {r['delivered']} of {r['expected']} messages delivered in time")
    return {
        "rate": r["rate"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "cpu_us_per_delivery": 1e6 * m["server_cpu_s"] / r["delivered"],
        **_cpu(m),
    }


def _idle(r: dict[str, Any], m: dict[str, Any]) -> dict[str, float]:
    if r["held"] != m["conns"]:
        raise RuntimeError(f"server closed {m['conns'] - r['held']} of {m['conns']} idle connections")
    return {"kib_per_conn": (m["rss_ready_kib"] - m["rss_base_kib"]) / m["conns"], "rss_mib": m["rss_ready_kib"] / 1024}


LAT = (Metric("p50_ms", "p50 ms", "lower", "{:.2f}"), Metric("p99_ms", "p99 ms", "lower", "{:.2f}"))
FANOUT_METRICS = (
    Metric("rate", "deliveries/s", "higher"),
    Metric("cpu_us_per_delivery", "srv CPU µs/delivery", "lower", "{:.2f}"),
    Metric("p99_ms", "p99 ms", "lower", "{:.1f}"),
) + CPU_METRICS

SCENARIOS = {
    s.name: s
    for s in [
        Scenario(
            "echo-small", "{conns} connections round-tripping {size}-byte text messages for {duration_s} s",
            "echo", ALL_WS + ("raw-tcp",),
            {"conns": 50, "size": 32, "binary": False, "duration_s": 5},
            {"duration_s": 1},
            (Metric("rate", "round trips/s", "higher"), *LAT,
             Metric("cpu_us_per_rt", "srv CPU µs/rt", "lower", "{:.1f}"), *CPU_METRICS),
            _echo,
        ),
        Scenario(
            "echo-large", "{conns} connections echoing {size_mib} MiB binary messages for {duration_s} s",
            "echo", ALL_WS + ("raw-tcp",),
            {"conns": 4, "size": 2**20, "binary": True, "duration_s": 5},
            {"duration_s": 1},
            (Metric("mib_s", "MiB/s", "higher", "{:,.1f}"), Metric("cpu_us_per_rt", "srv CPU µs/MiB echoed", "lower"),
             *CPU_METRICS),
            _echo,
            client="lean",
        ),
        Scenario(
            "fanout-1000", "{subscribers} subscribers, one publisher sending {messages} messages at once",
            "fanout", ALL_WS,
            {"subscribers": 1000, "messages": 200},
            {},
            FANOUT_METRICS,
            _fanout,
            client="lean",
        ),
        Scenario(
            "fanout-5000", "{subscribers} subscribers, one publisher sending {messages} messages at once",
            "fanout", ALL_WS,
            {"subscribers": 5000, "messages": 200},
            {"messages": 50},
            FANOUT_METRICS,
            _fanout,
            timeout_s=240,
            client="lean",
        ),
        Scenario(
            "fanout-paced", "{subscribers} subscribers, {rate} messages/s for {messages} messages: delivery latency",
            "fanout", ALL_WS,
            {"subscribers": 1000, "messages": 100, "rate": 20},
            {"messages": 20},
            (Metric("p99_ms", "p99 ms", "lower", "{:.2f}"), Metric("p50_ms", "p50 ms", "lower", "{:.2f}"),
             Metric("cpu_us_per_delivery", "srv CPU µs/delivery", "lower", "{:.2f}"),
             *CPU_METRICS),
            _fanout,
            client="lean",
        ),
        Scenario(
            "idle", "{conns} open idle connections: server memory per connection",
            "idle", ALL_WS + ("raw-tcp",),
            {"conns": 10000},
            {"conns": 2000},
            (Metric("kib_per_conn", "RSS KiB/conn", "lower", "{:.1f}"), Metric("rss_mib", "RSS MiB", "lower", "{:,.1f}")),
            _idle,
            timeout_s=180,
        ),
        Scenario(
            "cross-worker", "gunicorn -w {workers} + RedisPubSub, {subscribers} subscribers, {messages} messages",
            "fanout", ("wsm-gunicorn",),
            {"subscribers": 1000, "messages": 200, "workers": 2},
            {},
            (Metric("rate", "deliveries/s", "higher"), Metric("p99_ms", "p99 ms", "lower", "{:.1f}"),
             Metric("cpu_us_per_delivery", "srv CPU µs/delivery", "lower", "{:.2f}")),
            _fanout,
            client="lean",
        ),
        Scenario(
            "pubsub-memory", "PubSubWS on MemoryPubSub, {subscribers} subscribers, {messages} messages, history off",
            "fanout", ("wsm",),
            {"subscribers": 1000, "messages": 200},
            {},
            FANOUT_METRICS,
            _fanout,
            client="lean",
        ),
        Scenario(
            "history-memory", "PubSubWS on MemoryPubSub(history={history}), {subscribers} subscribers, "
            "{messages} messages",
            "fanout", ("wsm",),
            {"subscribers": 1000, "messages": 200, "history": 1000},
            {},
            FANOUT_METRICS,
            _fanout,
            client="lean",
        ),
        Scenario(
            "history-cross-worker", "gunicorn -w {workers} + RedisPubSub(history={history}), {subscribers} "
            "subscribers, {messages} messages",
            "fanout", ("wsm-gunicorn",),
            {"subscribers": 1000, "messages": 200, "workers": 2, "history": 1000},
            {},
            (Metric("rate", "deliveries/s", "higher"), Metric("p99_ms", "p99 ms", "lower", "{:.1f}"),
             Metric("cpu_us_per_delivery", "srv CPU µs/delivery", "lower", "{:.2f}")),
            _fanout,
            client="lean",
        ),
    ]
}

#: Scenarios whose /broadcast is a PubSubWS: (backend, history env), and the one they compare with.
PUBSUB = {
    "cross-worker": ("redis", None),
    "pubsub-memory": ("memory", None),
    "history-memory": ("memory", "pubsub-memory"),
    "history-cross-worker": ("redis", "cross-worker"),
}
REDIS_SCENARIOS = ("cross-worker", "history-cross-worker")

#: (scenario, metric, bound, what): wsmiddleware under pywsgi divided by the best anchor.
TARGETS = [
    ("echo-small", "rate", 1.2, ">="),
    ("echo-large", "mib_s", 1.2, ">="),
    ("fanout-1000", "rate", 1.0, ">="),
    ("fanout-1000", "cpu_us_per_delivery", 0.5, "<="),
    ("fanout-5000", "rate", 1.0, ">="),
    ("fanout-5000", "cpu_us_per_delivery", 0.5, "<="),
    ("fanout-paced", "p99_ms", 1.0, "<="),
    ("idle", "kib_per_conn", 0.8, "<="),
]

# -- preparing -------------------------------------------------------------------


def bench_requirements() -> list[str]:
    """The ``bench`` extra of setup.cfg: what the anchors need."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    text = parser.get("options.extras_require", "bench", fallback="")
    return [line.strip() for line in text.splitlines() if line.strip()]


def prepare(servers: set[str], need_redis: bool) -> None:
    """Install what the selected servers and the load generator need."""
    if shutil.which("node") is None:
        sys.exit("benchmarks: Node.js (v18+) is needed for the load generator; install it and retry")
    if not (HERE / "node_modules" / "ws").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("benchmarks: npm is needed to install the load generator's 'ws' package")
        print("benchmarks: installing the load generator's packages (npm ci)", flush=True)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, stdout=subprocess.DEVNULL)
    modules = {m for s in servers for m in SERVERS[s].modules}
    if need_redis:
        modules |= {"gunicorn", "redis"}
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    if missing:
        requirements = bench_requirements()
        print(f"benchmarks: {', '.join(missing)} missing; pip-installing {' '.join(requirements)}", flush=True)
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", *requirements], check=True)
        importlib.invalidate_caches()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("gevent", "websockets", "gevent-websocket", "simple-websocket", "gunicorn", "redis", "wsmiddleware"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    found["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    try:
        found["ws (npm)"] = json.loads((HERE / "node_modules" / "ws" / "package.json").read_text())["version"]
    except OSError:
        pass
    return found


# -- measuring -------------------------------------------------------------------


class LineReader:
    """JSON lines from a child's stdout, each awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ)

    def next(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                raise TimeoutError(f"load generator said nothing for {timeout:.0f} s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"load generator exited ({self.proc.wait()})")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line)
        if message.get("event") == "error":
            raise RuntimeError(f"load generator: {message['message']}")
        return message

    def close(self) -> None:
        self.selector.close()


@dataclass
class Started:
    proc: subprocess.Popen
    port: int
    log: Path


def start_server(server_id: str, *, workers: int = 1, env: dict[str, str] | None = None,
                 cpu: int | None = 0) -> Started:
    port = procs.free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{server_id}-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(procs.pinned(server_argv(server_id, port, workers), cpu), cwd=ROOT, env=full_env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        procs.wait_for_port(port, proc)
        if server_id == "wsm-gunicorn":
            _wait_for_workers(proc, workers)
    except Exception:
        procs.stop(proc)
        raise RuntimeError(f"{server_id} did not start; see {log}") from None
    return Started(proc, port, log)


def _wait_for_workers(proc: subprocess.Popen, workers: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(procs.tree(proc.pid)) < workers + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the workers import the app after forking


def run_loadgen(cfg: dict[str, Any], server: Started, timeout_s: float,
                on_ready: Callable[[], dict[str, Any]] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one load-generator phase; return (its result, the server/client readings)."""
    cfg = {**cfg, "timeout_s": timeout_s, "phase_timeout_s": max(10.0, timeout_s - 30)}
    err = tempfile.TemporaryFile()
    gen = subprocess.Popen(procs.pinned(["node", str(HERE / "loadgen.js"), json.dumps(cfg)], 1), cwd=HERE,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    reader = LineReader(gen)
    try:
        ready = reader.next(timeout_s)
        readings: dict[str, Any] = {"conns": ready.get("conns"), "workers": ready.get("workers")}
        if on_ready is not None:
            readings.update(on_ready())
        server_pids = procs.tree(server.proc.pid)
        s0, c0, t0 = procs.cpu_seconds(server_pids), procs.cpu_seconds([gen.pid]), time.monotonic()
        gen.stdin.write(b"go\n")
        gen.stdin.flush()
        result = reader.next(timeout_s)
        t1 = time.monotonic()
        readings.update(server_cpu_s=procs.cpu_seconds(server_pids) - s0,
                        client_cpu_s=procs.cpu_seconds([gen.pid]) - c0, wall_s=t1 - t0)
        gen.wait(10)
        return result, readings
    except Exception as exc:
        err.seek(0)
        detail = err.read().decode(errors="replace").strip()[-500:]
        raise RuntimeError(f"{exc}{': ' + detail if detail else ''}") from None
    finally:
        reader.close()
        err.close()
        procs.stop(gen, timeout=2)


FD_MARGIN = 512
FD_LIMIT = procs.raise_fd_limit(0)


def idle_conns_for(server_id: str, wanted: int) -> int:
    """How many idle connections fit under the open-file limit on this server."""
    fds_per_conn = 2 if server_id == "simple" else 1
    return max(100, min(wanted, (FD_LIMIT - FD_MARGIN) // fds_per_conn))


def measure(scenario: Scenario, server_id: str, quick: bool, redis_url: str | None,
            client: str = "ws") -> dict[str, float]:
    cfg = scenario.config(quick)
    params = dict(cfg)
    server = SERVERS[server_id]
    load: dict[str, Any] = {"mode": scenario.mode, "protocol": "ws" if server.ws else "tcp", "client": client}
    if scenario.mode == "echo":
        load.update(conns=cfg["conns"], size=cfg["size"], binary=cfg["binary"], duration_s=cfg["duration_s"])
    elif scenario.mode == "fanout":
        load.update(subscribers=cfg["subscribers"], messages=cfg["messages"], rate=cfg.get("rate"))
    else:
        load.update(conns=idle_conns_for(server_id, cfg["conns"]))
    env = None
    workers = params.get("workers", 1)
    cpu: int | None = 0
    if scenario.name in PUBSUB:
        backend = PUBSUB[scenario.name][0]
        env = {"WSM_BENCH_HISTORY": str(params.get("history", 0))}
        if backend == "redis":
            env["WSM_BENCH_REDIS"] = redis_url or ""
            cpu = None  # two workers and Redis need both CPUs
        else:
            env["WSM_BENCH_PUBSUB"] = "memory"
        load["expect_pids"] = True
    started = start_server(server_id, workers=workers, env=env, cpu=cpu)
    try:
        load.update(url=f"ws://127.0.0.1:{started.port}", host="127.0.0.1", port=started.port)
        extra: dict[str, Any] = {}
        if scenario.mode == "idle":
            # Warm up (imports, first-connection allocations) before the baseline.
            run_loadgen({**load, "conns": 20, "settle_ms": 50}, started, 60)
            time.sleep(0.5)
            extra["rss_base_kib"] = procs.rss_kib(procs.tree(started.proc.pid))
        result, readings = run_loadgen(load, started, scenario.timeout_s,
                                       _read_rss(started) if scenario.mode == "idle" else None)
        readings.update(extra)
        values = scenario.extract(result, readings)
        if readings.get("workers"):
            values["_workers"] = readings["workers"]  # type: ignore[assignment]
        return values
    finally:
        procs.stop(started.proc)


def _read_rss(server: Started) -> Callable[[], dict[str, Any]]:
    """What to read once every idle connection is open: the server's memory, settled."""

    def read() -> dict[str, Any]:
        time.sleep(0.5)
        return {"rss_ready_kib": procs.rss_kib(procs.tree(server.proc.pid))}

    return read


def start_redis() -> tuple[subprocess.Popen, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = procs.free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    procs.wait_for_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


# -- summarising -----------------------------------------------------------------


def summarise(runs: list[dict[str, float]], metrics: tuple[Metric, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in metrics:
        values = [r[metric.key] for r in runs if r.get(metric.key) is not None]
        if values:
            out[metric.key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                               "values": values}
    return out


def ratios(summary: dict[str, Any]) -> dict[str, Any]:
    """wsmiddleware's median divided by each other server's, per metric."""
    out: dict[str, Any] = {}
    for wsm_id in ("wsm", "wsm-gunicorn"):
        mine = summary.get(wsm_id, {}).get("metrics", {})
        for other, data in summary.items():
            if other in ("wsm", "wsm-gunicorn") or "metrics" not in data:
                continue
            for key, stats in data["metrics"].items():
                if key in mine and stats["median"]:
                    out.setdefault(wsm_id, {}).setdefault(other, {})[key] = mine[key]["median"] / stats["median"]
    return out


def best_anchor(summary: dict[str, Any], scenario: Scenario, key: str) -> tuple[str, float] | None:
    metric = next(m for m in scenario.metrics if m.key == key)
    anchors = [(sid, d["metrics"][key]["median"]) for sid, d in summary.items()
               if SERVERS[sid].anchor and key in d.get("metrics", {})]
    if not anchors:
        return None
    pick = max if metric.better == "higher" else min
    return pick(anchors, key=lambda item: item[1])


def fmt_stat(metric: Metric, stats: dict[str, float] | None, repeats: int) -> str:
    if stats is None:
        return "—"
    text = metric.fmt.format(stats["median"])
    if repeats > 1:
        text += f" ({metric.fmt.format(stats['min'])}–{metric.fmt.format(stats['max'])})"
    return text


def print_table(scenario: Scenario, cfg: dict[str, Any], summary: dict[str, Any], repeats: int,
                client: str) -> None:
    title_cfg = {**cfg, "size_mib": cfg.get("size", 0) / 2**20}
    print(f"\n## {scenario.name}: {scenario.title.format(**title_cfg)} (client: {client})")
    primary = scenario.metrics[0]
    headers = ["server"] + [m.label for m in scenario.metrics] + [f"wsm ÷ this ({primary.label})"]
    rows = []
    wsm_primary = summary.get(WSM, {}).get("metrics", {}).get(primary.key)
    for sid, data in summary.items():
        if "error" in data and "metrics" not in data:
            rows.append([SERVERS[sid].label, f"failed: {data['error'][:90]}"] + [""] * len(scenario.metrics))
            continue
        cells = [SERVERS[sid].label]
        for metric in scenario.metrics:
            cells.append(fmt_stat(metric, data["metrics"].get(metric.key), repeats))
        theirs = data["metrics"].get(primary.key)
        if sid == WSM or not wsm_primary or not theirs or not theirs["median"]:
            cells.append("")
        else:
            cells.append(f"{wsm_primary['median'] / theirs['median']:.2f}×")
        if data.get("errors"):
            cells[0] += f" [{len(data['errors'])} failed]"
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for name, key, bound, op in TARGETS:
        data = results.get(name)
        if not data:
            continue
        scenario = SCENARIOS[name]
        mine = data["servers"].get(WSM, {}).get("metrics", {}).get(key)
        best = best_anchor(data["servers"], scenario, key)
        if mine is None or best is None or not best[1]:
            continue
        ratio = mine["median"] / best[1]
        met = ratio >= bound if op == ">=" else ratio <= bound
        checks.append({"scenario": name, "metric": key, "wsm": mine["median"], "best_anchor": best[0],
                       "best_anchor_value": best[1], "ratio": ratio, "target": f"{op} {bound}", "met": met})
    cross = results.get("cross-worker", {}).get("servers", {}).get("wsm-gunicorn", {}).get("metrics", {}).get("rate")
    local = results.get("fanout-1000", {}).get("servers", {}).get(WSM, {}).get("metrics", {}).get("rate")
    if cross and local:
        ratio = cross["median"] / local["median"]
        checks.append({"scenario": "cross-worker", "metric": "rate", "wsm": cross["median"],
                       "best_anchor": "wsm in-process fanout-1000", "best_anchor_value": local["median"],
                       "ratio": ratio, "target": ">= 0.66", "met": ratio >= 0.66})
    for name, (_, baseline) in PUBSUB.items():
        on = results.get(name, {}).get("servers", {})
        off = results.get(baseline or "", {}).get("servers", {})
        for sid in set(on) & set(off):
            with_history = on[sid].get("metrics", {}).get("rate")
            without = off[sid].get("metrics", {}).get("rate")
            if with_history and without and without["median"]:
                ratio = with_history["median"] / without["median"]
                checks.append({"scenario": name, "metric": "rate", "wsm": with_history["median"],
                               "best_anchor": f"{baseline} (history off, same run)",
                               "best_anchor_value": without["median"], "ratio": ratio, "target": ">= 0.8",
                               "met": ratio >= 0.8})
    return checks


# -- main --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: shorter phases, fewer messages (< 2 min)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated: " + ", ".join(SERVERS))
    parser.add_argument("--repeats", type=int, default=None, help="measurements per server and scenario "
                        "(default 3, or 1 with --quick)")
    parser.add_argument("--client", choices=("auto", "ws", "lean"), default="auto",
                        help="the load generator's WebSocket client: auto (each scenario's own: the lean "
                        "one for echo-large and the fan-outs), or one for all, to compare them")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results "
                        "(default benchmarks/results/bench-<time>.json)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    for name in names:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    for sid in chosen:
        if sid not in SERVERS:
            parser.error(f"unknown server {sid!r}; choose from {', '.join(SERVERS)}")
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1 or repeats > 20:
        parser.error("--repeats must be between 1 and 20")

    notes: list[str] = []
    need_redis = any(name in names for name in REDIS_SCENARIOS) and "wsm-gunicorn" in chosen
    prepare(set(chosen), need_redis)

    # Each idle connection is a file descriptor on both ends (two in simple-websocket's
    # server, which duplicates the socket).
    idle_conns = SCENARIOS["idle"].config(args.quick)["conns"]
    global FD_LIMIT
    FD_LIMIT = procs.raise_fd_limit(2 * idle_conns + FD_MARGIN)
    if "idle" in names:
        for sid in SCENARIOS["idle"].servers:
            held = idle_conns_for(sid, idle_conns)
            if sid in chosen and held < idle_conns:
                notes.append(f"open-file limit is {FD_LIMIT}: idle holds {held} connections on {sid}")

    redis: tuple[subprocess.Popen, str] | None = None
    if need_redis:
        from benchmarks.apps import redis_available

        redis = start_redis() if redis_available() else None
        if redis is None:
            for name in REDIS_SCENARIOS:
                if name in names:
                    notes.append(f"{name} skipped: no redis-server, or this wsmiddleware has no RedisPubSub")
                    names.remove(name)

    meta = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeats": repeats,
        "client": args.client,
        "pinning": procs.pinning_note(),
        "cpus": len(procs.CPUS),
        "load_average_at_start": os.getloadavg(),
        "versions": versions(),
        "broadcast": __import__("benchmarks.apps", fromlist=["BROADCAST_KIND"]).BROADCAST_KIND,
        "command": " ".join([Path(PYTHON).name, "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    print(f"benchmarks: {meta['pinning']}; {repeats} repeat(s); wsmiddleware broadcast via {meta['broadcast']}")
    for note in notes:
        print(f"note: {note}")
    results: dict[str, Any] = {}
    began = time.monotonic()
    try:
        for name in names:
            scenario = SCENARIOS[name]
            servers = [s for s in scenario.servers if s in chosen]
            if not servers:
                continue
            client = scenario.client if args.client == "auto" else args.client
            runs: dict[str, list[dict[str, float]]] = {s: [] for s in servers}
            errors: dict[str, list[str]] = {s: [] for s in servers}
            for rep in range(repeats):
                # Rotate the order, so that a burst of noise on the machine does not
                # always hit the same server.
                shift = rep % len(servers)
                for sid in servers[shift:] + servers[:shift]:
                    label = f"{name} [{rep + 1}/{repeats}] {sid}"
                    print(f"  {label} ...", end="", flush=True)
                    t0 = time.monotonic()
                    try:
                        values = measure(scenario, sid, args.quick, redis[1] if redis else None, client)
                        runs[sid].append(values)
                        primary = scenario.metrics[0]
                        print(f" {primary.fmt.format(values[primary.key])} {primary.label}"
                              f" ({time.monotonic() - t0:.1f} s)", flush=True)
                    except Exception as exc:
                        errors[sid].append(" ".join(str(exc).split()))
                        print(f" FAILED: {exc}", flush=True)
            summary: dict[str, Any] = {}
            for sid in servers:
                entry: dict[str, Any] = {"label": SERVERS[sid].label, "anchor": SERVERS[sid].anchor}
                if runs[sid]:
                    entry["metrics"] = summarise(runs[sid], scenario.metrics)
                    workers = [r["_workers"] for r in runs[sid] if "_workers" in r]
                    if workers:
                        entry["workers"] = workers
                if errors[sid]:
                    entry["errors"] = errors[sid]
                    entry.setdefault("error", errors[sid][0])
                summary[sid] = entry
            cfg = scenario.config(args.quick)
            results[name] = {
                "title": scenario.title.format(**{**cfg, "size_mib": cfg.get("size", 0) / 2**20}),
                "params": cfg,
                "client": client,
                "metrics": {m.key: {"label": m.label, "better": m.better} for m in scenario.metrics},
                "servers": summary,
                "ratios": ratios(summary),
            }
    finally:
        if redis is not None:
            procs.stop(redis[0])

    print(f"\n# Results ({'quick' if args.quick else 'full'} run, median of {repeats}"
          f"{', min–max in brackets' if repeats > 1 else ''}; {meta['pinning']})")
    for name, data in results.items():
        print_table(SCENARIOS[name], data["params"], data["servers"], repeats, data["client"])
        workers = data["servers"].get("wsm-gunicorn", {}).get("workers")
        if name in REDIS_SCENARIOS:
            print("(not pinned: the two workers, Redis and the load generator share every CPU)")
            if workers:
                print(f"subscribers per worker process: {workers}")
    checks = evaluate_targets(results)
    if checks:
        print("\n## Targets (wsmiddleware / gevent.pywsgi ÷ best anchor, same run)")
        for c in checks:
            print(f"- {c['scenario']} {c['metric']}: {c['ratio']:.2f}× {c['best_anchor']} "
                  f"(target {c['target']}): {'met' if c['met'] else 'MISSED'}")
    out = args.json or RESULTS / f"bench-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta["duration_s"] = round(time.monotonic() - began, 1)
    out.write_text(json.dumps({"meta": meta, "notes": notes, "scenarios": results, "targets": checks}, indent=2))
    print(f"\nwrote {out} ({meta['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
