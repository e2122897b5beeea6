"""Tests of deploy/checks/observability.py: the repository's rules and dashboards pass, and the
checks catch what they are meant to catch. They need promtool and fail (not skip) without it."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).with_name("observability.py")
_spec = importlib.util.spec_from_file_location("flywheel_observability_checks", _PATH)
assert _spec is not None and _spec.loader is not None
obs = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = obs
_spec.loader.exec_module(obs)


@pytest.fixture(scope="module")
def promtool() -> str:
    try:
        return obs.find_promtool()
    except obs.PromtoolMissing as exc:
        missing = str(exc)
    pytest.fail(f"these checks need promtool (not skipped on purpose): {missing}", pytrace=False)


@pytest.fixture(scope="module")
def overview() -> dict[str, Any]:
    return json.loads((obs.GRAFANA_DIR / "flywheel-overview.json").read_text())


def test_rule_files_pass_promtool(promtool: str) -> None:
    assert obs.check_rules(promtool) == []


def test_rule_unit_tests_pass_and_cover_every_alert(promtool: str) -> None:
    assert obs.run_rule_tests(promtool) == []
    assert len(obs.alert_names()) >= 10


def test_dashboards_are_well_formed() -> None:
    assert obs.check_dashboards() == []


def test_dashboard_queries_parse(promtool: str) -> None:
    assert obs.check_dashboard_queries(promtool) == []


def test_every_referenced_metric_is_defined_in_code() -> None:
    referenced = obs.referenced_metrics()
    assert {"up", "flywheel_serving_request_seconds_bucket", "flywheel_kafka_consumer_lag"} <= (
        referenced
    )
    assert obs.check_metric_names() == []


def test_whole_run_passes(promtool: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert obs.run_checks(promtool) == []
    assert "FAIL" not in capsys.readouterr().out


# -- the checks catch problems ---------------------------------------------------------------


def test_broken_expression_is_caught(promtool: str) -> None:
    problems = obs.check_expressions(
        promtool,
        {
            "good": "sum by (model) (rate(flywheel_serving_requests_total[5m]))",
            "broken": "sum(rate(flywheel_serving_requests_total[5m])",
        },
    )
    assert len(problems) == 1
    assert problems[0].startswith("broken: ")
    assert "parse error" in problems[0]


def test_broken_panel_expression_is_caught(
    promtool: str, overview: dict[str, Any], tmp_path: Path
) -> None:
    doc = copy.deepcopy(overview)
    panel = next(p for p in doc["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = 'rate(flywheel_serving_requests_total{model="x"[5m])'
    (tmp_path / "broken.json").write_text(json.dumps(doc))
    problems = obs.check_dashboard_queries(promtool, tmp_path)
    assert len(problems) == 1
    assert f"panel {panel['id']}" in problems[0]


def test_grafana_variables_are_substituted() -> None:
    expr = 'sum(rate(x{model=~"$model", v="${version:regex}"}[$__rate_interval])) [[w]]'
    out = obs.grafana_to_promql(expr, {"model": "query", "w": "interval"})
    assert out == 'sum(rate(x{model=~".*", v=".*"}[5m])) 5m'


def test_dashboard_structure_problems_are_caught(overview: dict[str, Any]) -> None:
    doc = copy.deepcopy(overview)
    queried = [p for p in doc["panels"] if p.get("targets")]
    queried[1]["id"] = queried[0]["id"]
    del queried[2]["gridPos"]
    queried[3]["targets"][0]["expr"] = " "
    queried[4]["datasource"] = {"type": "prometheus", "uid": "prom-prod"}
    queried[5]["targets"][0]["expr"] += " + on () vector($undefined_var)"
    doc["uid"] = ""
    problems = "\n".join(obs.check_dashboard(doc, "d.json"))
    assert f"id {queried[0]['id']} also used by" in problems
    assert "gridPos missing" in problems
    assert "expr missing or empty" in problems
    assert "datasource is not ${datasource}" in problems
    assert "variable $undefined_var is not defined" in problems
    assert "uid '' missing or invalid" in problems


def test_overlapping_panels_are_caught(overview: dict[str, Any]) -> None:
    doc = copy.deepcopy(overview)
    queried = [p for p in doc["panels"] if p.get("targets")]
    queried[1]["gridPos"] = dict(queried[0]["gridPos"])
    assert any("overlaps" in p for p in obs.check_dashboard(doc, "d.json"))


def test_duplicate_uid_across_dashboards_is_caught(
    overview: dict[str, Any], tmp_path: Path
) -> None:
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(overview))
    problems = obs.check_dashboards(tmp_path)
    assert any("uid 'flywheel-overview' also used by" in p for p in problems)
    assert any("title" in p and "also used by" in p for p in problems)


def test_unknown_metric_is_caught() -> None:
    problems = obs.check_metric_names(
        refs={
            "flywheel_serving_requests_total": {"ok"},
            "flywheel_serving_request_seconds": {"dash: panel 3"},  # a histogram's bare name
            "flywheel:nope:rate5m": {"rules: X"},
        }
    )
    assert len(problems) == 2
    metric = next(p for p in problems if "flywheel_serving_request_seconds" in p)
    assert metric.startswith("unknown metric flywheel_serving_request_seconds (not defined")
    assert metric.endswith("used by: dash: panel 3")
    record = next(p for p in problems if "flywheel:nope:rate5m" in p)
    assert record.startswith("unknown recording rule flywheel:nope:rate5m (not recorded by")


def test_expr_metrics_ignores_strings_label_lists_and_functions() -> None:
    expr = (
        'label_replace(sum by (flywheel_label) (flywheel_a_total{x="flywheel_b"}), "g", '
        '"flywheel_c", "", "") / on (up) group_left (flywheel_d) flywheel:e:rate5m'
        " or up == 0 or histogram_quantile(0.9, rate(flywheel_f_bucket[5m]))"
    )
    assert obs.expr_metrics(expr) == {
        "flywheel_a_total",
        "flywheel:e:rate5m",
        "up",
        "flywheel_f_bucket",
    }


def test_known_metrics_expand_prometheus_client_names() -> None:
    known = obs.known_metrics()
    assert {"flywheel_serving_requests_total", "flywheel_serving_requests_created"} <= known
    assert {
        "flywheel_serving_request_seconds_bucket",
        "flywheel_serving_request_seconds_sum",
        "flywheel_serving_request_seconds_count",
    } <= known
    assert "flywheel_serving_request_seconds" not in known
    assert "flywheel_registry_outbox_pending" in known


def test_alert_without_negative_test_is_caught(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "t.yaml").write_text(
        "rule_files: [../rules.yaml]\ntests:\n  - alert_rule_test:\n"
        "      - {alertname: A, eval_time: 1m, exp_alerts: [{exp_labels: {}}]}\n"
    )
    assert obs.rule_test_coverage(rules, tests) == [f"{tests}: no test where alert A must not fire"]


def test_rule_lint_catches_missing_severity_and_annotations(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n"
        "        labels: {severity: page}\n        annotations: {summary: s}\n"
    )
    problems = obs.lint_rules(rules, tmp_path / "RUNBOOK.md")
    assert any("severity is 'page'" in p for p in problems)
    assert any("annotation description missing" in p for p in problems)
    assert any("annotation runbook_url missing" in p for p in problems)
