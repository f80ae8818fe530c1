"""The benchmark instrument runs end to end in its smallest mode and writes well-formed JSON.

No speed is asserted here: numbers belong to ``python benchmarks/run.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .support import ROOT

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    if shutil.which("node") is None:
        pytest.fail("Node.js is needed by the benchmark's load generator (install nodejs)")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--repeats", "1",
         "--scenarios", "echo-small,fanout-1000", "--servers", "wsm,websockets", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=140,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "## echo-small" in proc.stdout and "## fanout-1000" in proc.stdout
    return json.loads(out.read_text())


def test_json_has_meta_scenarios_and_targets(results):
    assert set(results) >= {"meta", "scenarios", "targets", "notes"}
    meta = results["meta"]
    assert meta["quick"] is True and meta["repeats"] == 1
    assert meta["versions"]["node"].startswith("v")
    assert set(results["scenarios"]) == {"echo-small", "fanout-1000"}


def test_every_server_has_median_min_max_for_each_metric(results):
    for name, scenario in results["scenarios"].items():
        assert set(scenario["servers"]) == {"wsm", "websockets"}, name
        for server_id, data in scenario["servers"].items():
            assert "errors" not in data, (name, server_id, data.get("errors"))
            assert set(data["metrics"]) == set(scenario["metrics"]), (name, server_id)
            for key, stats in data["metrics"].items():
                assert stats["min"] <= stats["median"] <= stats["max"], (name, server_id, key)
                assert len(stats["values"]) == 1
    echo = results["scenarios"]["echo-small"]["servers"]["wsm"]["metrics"]
    assert echo["rate"]["median"] > 0 and echo["p99_ms"]["median"] >= echo["p50_ms"]["median"]
    fanout = results["scenarios"]["fanout-1000"]["servers"]["wsm"]["metrics"]
    assert fanout["cpu_us_per_delivery"]["median"] > 0


def test_ratios_compare_wsmiddleware_with_each_anchor(results):
    for scenario in results["scenarios"].values():
        ratios = scenario["ratios"]["wsm"]["websockets"]
        wsm = scenario["servers"]["wsm"]["metrics"]
        anchor = scenario["servers"]["websockets"]["metrics"]
        for key, ratio in ratios.items():
            assert ratio == pytest.approx(wsm[key]["median"] / anchor[key]["median"])
    checked = {(t["scenario"], t["metric"]) for t in results["targets"]}
    assert ("echo-small", "rate") in checked and ("fanout-1000", "cpu_us_per_delivery") in checked
    for target in results["targets"]:
        assert target["best_anchor"] == "websockets" and isinstance(target["met"], bool)
