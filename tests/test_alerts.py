"""deploy/alerts.yml: promtool accepts the rules and their unit tests pass, every alert
has tests that see it fire and stay quiet, every metric a rule names is one the real
server's /metrics exposes, and every runbook link lands on a README heading.

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it). Without it
the promtool tests skip, saying so, unless ``TASKHOOK_REQUIRE_PROMTOOL=1`` (set by
``.ci/run``) makes its absence a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .harness import ROOT, ServerProcess
from .promql import metric_names, series_names

RULES = ROOT / "deploy" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "alerts_test.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("TASKHOOK_REQUIRE_PROMTOOL") == "1":
        pytest.fail("promtool is not installed but TASKHOOK_REQUIRE_PROMTOOL=1 requires it")
    pytest.skip("promtool is not installed (apt-get install -y prometheus); .ci/run installs it")


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


# -- promtool ---------------------------------------------------------------------


def test_promtool_accepts_the_rules():
    checked = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerting_rules())} rules found" in checked.stdout


def test_promtool_unit_tests_pass():
    tested = run_promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


# -- the rules and their tests, read as data ----------------------------------------


def test_every_alert_is_tested_firing_and_quiet():
    """Each alert has an evaluation where it fires and one where some scenario stays quiet."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load(RULE_TESTS)["tests"]:
        jobs = {
            m.group(1)
            for s in case["input_series"]
            if (m := re.search(r'job="([^"]+)"', s["series"]))
        }
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            if expected:
                fires.add(check["alertname"])
            firing_jobs = {a["exp_labels"].get("job") for a in expected}
            if not expected or jobs - firing_jobs:
                quiet.add(check["alertname"])
    alerts = {rule["alert"] for rule in alerting_rules()}
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_explains_itself_and_its_runbook_exists():
    anchors = github_anchors((ROOT / "README.md").read_text())
    for rule in alerting_rules():
        notes = rule.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), rule["alert"]
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), rule["alert"]
        page, _, anchor = notes.get("runbook", "").partition("#")
        assert page == "README.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"README has no heading for {rule['alert']}"


# -- every metric a rule names exists --------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (job, provider) (increase(a_total{outcome=~"ok|x}y", job="b"}[90m])) > 0',
            {"a_total"},
        ),
        ("min by (job) (min_over_time(g[30m])) > 0 unless on (job) h offset 1h", {"g", "h"}),
        ('x and on (instance) group_left (le) y{__name__="z"} # w\n', {"x", "y", "z"}),
        ("sum(rate(c_count[5m:1m])) without (job) > bool 1e-3 * inf", {"c_count"}),
        ('label_replace(up, "dst", "$1", "src", "(.*)") @ start()', {"up"}),
        ("absent(k)", {"k"}),
    ],
)
def test_metric_names_are_read_from_expressions(expr, names):
    assert metric_names(expr) == names


@pytest.mark.e2e
def test_every_metric_a_rule_names_is_exported(tmp_path, database_url):
    server = ServerProcess(tmp_path / "alerts.db", database_url=database_url).start()
    try:
        answer = httpx.get(f"{server.url}/metrics", timeout=10)
    finally:
        server.stop()
    assert answer.status_code == 200
    exported = series_names(answer.text)
    named: dict[str, set[str]] = {}
    for rule in alerting_rules():
        for name in metric_names(rule["expr"]):
            named.setdefault(name, set()).add(rule["alert"])
    assert len(named) >= 8, named  # the parser found the rules' metrics
    missing = {name: sorted(alerts) for name, alerts in named.items() if name not in exported}
    assert missing == {}, "rules name metrics that /metrics does not expose"
