"""Static checks of Flywheel's Prometheus rules and Grafana dashboards.

Usage::

    python deploy/checks/observability.py [--promtool PATH] [--list-metrics]

promtool is ``--promtool``, else ``$PROMTOOL``, else ``promtool`` on PATH, else /usr/bin/promtool.

Exits 0 when every check passes, 1 when any check finds a problem (each problem is printed on
its own line, prefixed with the file it is about), 2 when promtool cannot be found.

Checks, in order:

1. ``promtool check rules`` on ``deploy/prometheus/flywheel-rules.yaml``, plus a lint of every
   alert: ``severity`` label (critical, warning or info), ``summary``, ``description`` and
   ``runbook_url`` annotations, the runbook anchor exists in ``deploy/prometheus/RUNBOOK.md``;
   ``promtool check config`` on ``deploy/prometheus/prometheus.example.yml``.
2. ``promtool test rules`` on ``deploy/prometheus/tests/*.yaml``, and coverage: every alert has at
   least one test where it fires (non-empty ``exp_alerts``) and one where it must not (empty).
3. Dashboard structure (``deploy/grafana/*.json``): uid and title present and unique, a
   ``datasource`` template variable (type ``datasource``, query ``prometheus``), panel ids unique,
   ``gridPos`` present, inside the 24-column grid and not overlapping, every panel and target on
   ``${datasource}``, every target with a non-empty ``expr`` and a unique ``refId``, every ``$var``
   defined.
4. Every panel expression parses: Grafana variables are replaced (``$__rate_interval``,
   ``$__interval``, ``$__range`` and interval variables by ``5m``; ``*_s``/``*_ms`` built-ins by a
   number; other variables, which belong inside label-matcher strings, by ``.*``), each expression
   becomes one recording rule of its own group in a temporary rule file, and ``promtool check
   rules`` parses them all; errors are mapped back to dashboard, panel and refId.
5. Every metric name referenced by the rules and dashboards (:func:`referenced_metrics`) is
   defined in the code (:func:`known_metrics`), or is a recording rule of the rule file
   (``flywheel:…``), or is Prometheus' own ``up``.

Metric-name extraction (:func:`expr_metrics`) is a regex over the PromQL text, not a parser:
string literals are removed (label values, ``label_replace`` arguments, Grafana variables inside
matchers), then label lists of ``by``/``without``/``on``/``ignoring``/``group_left``/
``group_right`` and the insides of ``{…}`` matchers; what remains is searched for identifiers that
start with ``flywheel_`` or ``flywheel:`` or are exactly ``up``, not preceded by an identifier
character, ``$`` or ``.``, and not followed by ``(`` (a function call). Metrics selected only by
``{__name__=~"…"}`` would not be seen (none are used).

Known metrics (:func:`known_metrics`) come from a regex over ``shared/src`` and
``services/*/src``: ``Counter(``/``Gauge(``/``Histogram(``/``Summary(``/``Info(``/``Enum(`` whose
first argument is a string literal, expanded the way prometheus_client exposes them: a counter
``x`` or ``x_total`` as ``x_total`` and ``x_created``; a histogram ``h`` as ``h_bucket``,
``h_sum``, ``h_count``, ``h_created``; a summary ``s`` as ``s``, ``s_sum``, ``s_count``,
``s_created``; a gauge as itself. ``namespace=``/``subsystem=`` prefixes are not supported (none
are used).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES_FILE = PROMETHEUS_DIR / "flywheel-rules.yaml"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
RUNBOOK_FILE = PROMETHEUS_DIR / "RUNBOOK.md"
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.example.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"

SEVERITIES = frozenset({"critical", "warning", "info"})
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")
SYNTHETIC_METRICS = frozenset({"up"})  # written by Prometheus itself for every scrape target
DATASOURCE_VAR = "${datasource}"
DATASOURCE_UIDS = frozenset({"${datasource}", "$datasource"})
PANELS_WITHOUT_QUERIES = frozenset({"row", "text", "news", "dashlist", "alertlist"})
GRID_COLUMNS = 24

PROMTOOL_TIMEOUT_S = 120


class PromtoolMissing(RuntimeError):
    """promtool was not found."""


# -- promtool --------------------------------------------------------------------------------


def find_promtool(explicit: str | None = None) -> str:
    """Path of promtool: ``explicit``, else ``$PROMTOOL``, else ``promtool`` on PATH, else
    /usr/bin/promtool."""
    explicit = explicit or os.environ.get("PROMTOOL") or None
    candidates = [explicit] if explicit else ["promtool", "/usr/bin/promtool"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    raise PromtoolMissing(
        f"promtool not found ({explicit or 'not on PATH, not /usr/bin/promtool'}): install it "
        "with `apt-get install -y prometheus` (Debian, promtool 2.42; stop the prometheus service "
        "it may start) or `go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0`, "
        "or pass --promtool PATH"
    )


def run_promtool(promtool: str, *args: str, cwd: Path | None = None) -> tuple[int, str]:
    """Run promtool; returns its exit code and its stdout and stderr together."""
    proc = subprocess.run(
        [promtool, *args],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        cwd=cwd,
        check=False,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# -- rule files ------------------------------------------------------------------------------


def load_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """The rules of a rule file, each with a ``_group`` key."""
    doc = yaml.safe_load(path.read_text()) or {}
    out = []
    for group in doc.get("groups") or []:
        for rule in group.get("rules") or []:
            out.append({**rule, "_group": group.get("name")})
    return out


def recorded_names(path: Path = RULES_FILE) -> set[str]:
    """Names produced by the recording rules of ``path``."""
    return {r["record"] for r in load_rules(path) if "record" in r}


def alert_names(path: Path = RULES_FILE) -> list[str]:
    """Alert names of ``path``, in file order."""
    return [r["alert"] for r in load_rules(path) if "alert" in r]


def _runbook_anchors(path: Path) -> set[str]:
    """GitHub-style anchors of the Markdown headings of ``path``."""
    if not path.exists():
        return set()
    anchors = set()
    for line in path.read_text().splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def lint_rules(path: Path = RULES_FILE, runbook: Path = RUNBOOK_FILE) -> list[str]:
    """Conventions promtool does not check: labels, annotations, runbook anchors, unique names."""
    where = _rel(path)
    problems: list[str] = []
    try:
        rules = load_rules(path)
    except (OSError, yaml.YAMLError) as exc:
        return [f"{where}: cannot load: {exc}"]
    anchors = _runbook_anchors(runbook)
    seen: set[str] = set()
    for rule in rules:
        name = rule.get("alert")
        if name is None:
            continue
        if name in seen:
            problems.append(f"{where}: alert {name} is defined twice")
        seen.add(name)
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(
                f"{where}: alert {name}: label severity is {severity!r}, "
                f"want one of {sorted(SEVERITIES)}"
            )
        annotations = rule.get("annotations") or {}
        for key in REQUIRED_ANNOTATIONS:
            if not str(annotations.get(key) or "").strip():
                problems.append(f"{where}: alert {name}: annotation {key} missing or empty")
        url = str(annotations.get("runbook_url") or "")
        if "#" in url and url.split("#", 1)[0].endswith("RUNBOOK.md"):
            anchor = url.split("#", 1)[1]
            if anchor not in anchors:
                problems.append(
                    f"{where}: alert {name}: runbook_url anchor #{anchor} is not a heading "
                    f"of {_rel(runbook)}"
                )
    return problems


def check_rules(
    promtool: str, path: Path = RULES_FILE, config: Path | None = EXAMPLE_CONFIG
) -> list[str]:
    """``promtool check rules`` plus :func:`lint_rules`, and ``promtool check config`` on the
    example Prometheus configuration (which loads the rule file) when there is one."""
    if not path.exists():
        return [f"{_rel(path)}: missing"]
    rc, out = run_promtool(promtool, "check", "rules", str(path))
    problems = [] if rc == 0 else [f"{_rel(path)}: promtool check rules failed:\n{out}"]
    if config is not None and config.exists():
        rc, out = run_promtool(promtool, "check", "config", config.name, cwd=config.parent)
        if rc != 0:
            problems.append(f"{_rel(config)}: promtool check config failed:\n{out}")
    return problems + lint_rules(path)


def _rule_test_files(tests_dir: Path) -> list[Path]:
    return sorted([*tests_dir.glob("*.yaml"), *tests_dir.glob("*.yml")])


def rule_test_coverage(rules: Path = RULES_FILE, tests_dir: Path = RULE_TESTS_DIR) -> list[str]:
    """Every alert has a firing and a non-firing test case; test files load ``rules``."""
    problems: list[str] = []
    positive: set[str] = set()
    negative: set[str] = set()
    names = set(alert_names(rules))
    for file in _rule_test_files(tests_dir):
        doc = yaml.safe_load(file.read_text()) or {}
        loaded = {(file.parent / f).resolve() for f in doc.get("rule_files") or []}
        if rules.resolve() not in loaded:
            problems.append(f"{_rel(file)}: rule_files does not include {_rel(rules)}")
        for test in doc.get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                alert = case.get("alertname")
                if alert not in names:
                    problems.append(
                        f"{_rel(file)}: test {test.get('name')!r} checks unknown alert {alert!r}"
                    )
                (positive if case.get("exp_alerts") else negative).add(alert)
    for alert in sorted(names):
        if alert not in positive:
            problems.append(f"{_rel(tests_dir)}: no test where alert {alert} fires")
        if alert not in negative:
            problems.append(f"{_rel(tests_dir)}: no test where alert {alert} must not fire")
    return problems


def run_rule_tests(
    promtool: str, rules: Path = RULES_FILE, tests_dir: Path = RULE_TESTS_DIR
) -> list[str]:
    """``promtool test rules`` on every test file, plus :func:`rule_test_coverage`."""
    files = _rule_test_files(tests_dir)
    if not files:
        return [f"{_rel(tests_dir)}: no promtool rule tests (*.yaml)"]
    rc, out = run_promtool(promtool, "test", "rules", *map(str, files))
    problems = [] if rc == 0 else [f"{_rel(tests_dir)}: promtool test rules failed:\n{out}"]
    return problems + rule_test_coverage(rules, tests_dir)


# -- dashboards ------------------------------------------------------------------------------


def dashboard_files(grafana_dir: Path = GRAFANA_DIR) -> list[Path]:
    return sorted(grafana_dir.glob("*.json"))


def load_dashboards(grafana_dir: Path = GRAFANA_DIR) -> dict[Path, Any]:
    """Every dashboard JSON of ``grafana_dir`` (raises on invalid JSON)."""
    return {path: json.loads(path.read_text()) for path in dashboard_files(grafana_dir)}


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included."""
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def _is_var_datasource(ds: Any) -> bool:
    if isinstance(ds, str):
        return ds in DATASOURCE_UIDS
    return isinstance(ds, dict) and ds.get("uid") in DATASOURCE_UIDS


_VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_INTERVAL_BUILTINS = {"__rate_interval", "__interval", "__range"}
_NUMBER_BUILTINS = {"__range_s": "300", "__range_ms": "300000", "__interval_ms": "60000"}
_OTHER_BUILTINS = {"__name", "__org", "__user", "__dashboard", "timeFilter", "__timeFilter"}


def _variables(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Template variables: name -> type."""
    return {
        v.get("name"): v.get("type", "")
        for v in (dashboard.get("templating") or {}).get("list") or []
        if v.get("name")
    }


def grafana_to_promql(expr: str, variables: Mapping[str, str] | None = None) -> str:
    """``expr`` with Grafana's variables replaced so that promtool can parse it."""
    variables = variables or {}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in _INTERVAL_BUILTINS or variables.get(name) == "interval":
            return "5m"
        if name in _NUMBER_BUILTINS:
            return _NUMBER_BUILTINS[name]
        return ".*"

    return _VAR_RE.sub(repl, expr)


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every panel target with an expression."""
    out = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if isinstance(expr, str) and expr.strip():
                where = f"panel {panel.get('id')} {panel.get('title')!r} ref {target.get('refId')}"
                out.append((where, expr))
    return out


def variable_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, query) of every query template variable."""
    out = []
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query.strip():
            out.append((f"variable {var.get('name')}", query))
    return out


def _overlap(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def check_dashboard(dashboard: Any, where: str) -> list[str]:
    """Structural problems of one dashboard."""
    if not isinstance(dashboard, dict):
        return [f"{where}: not a JSON object"]
    problems: list[str] = []
    uid = dashboard.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
        problems.append(f"{where}: uid {uid!r} missing or invalid (1-40 of A-Z a-z 0-9 _ -)")
    if not str(dashboard.get("title") or "").strip():
        problems.append(f"{where}: title missing")
    if not isinstance(dashboard.get("schemaVersion"), int):
        problems.append(f"{where}: schemaVersion missing")
    variables = (dashboard.get("templating") or {}).get("list") or []
    ds_vars = [v for v in variables if v.get("name") == "datasource"]
    if not ds_vars:
        problems.append(f"{where}: no template variable named 'datasource'")
    elif ds_vars[0].get("type") != "datasource" or ds_vars[0].get("query") != "prometheus":
        problems.append(
            f"{where}: variable 'datasource' must have type 'datasource' and query 'prometheus'"
        )
    for var in variables:
        if var.get("type") == "query" and not _is_var_datasource(var.get("datasource")):
            problems.append(
                f"{where}: variable {var.get('name')}: datasource is not {DATASOURCE_VAR}"
            )
    defined = set(_variables(dashboard))

    panels = list(iter_panels(dashboard))
    if not any(p.get("type") not in PANELS_WITHOUT_QUERIES for p in panels):
        problems.append(f"{where}: no panels with queries")
    ids: dict[Any, str] = {}
    placed: list[tuple[str, dict[str, int]]] = []
    nested = {id(p) for top in dashboard.get("panels") or [] for p in top.get("panels") or []}
    for panel in panels:
        pid = panel.get("id")
        label = f"{where}: panel {pid} {panel.get('title')!r}"
        if not isinstance(pid, int):
            problems.append(f"{label}: id missing or not an integer")
        elif pid in ids:
            problems.append(f"{label}: id {pid} also used by {ids[pid]}")
        else:
            ids[pid] = repr(panel.get("title"))
        if not panel.get("type"):
            problems.append(f"{label}: type missing")
        grid = panel.get("gridPos")
        if not isinstance(grid, dict) or not all(
            isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")
        ):
            problems.append(f"{label}: gridPos missing or incomplete (h, w, x, y)")
        elif not (
            grid["h"] >= 1
            and 1 <= grid["w"] <= GRID_COLUMNS
            and grid["x"] >= 0
            and grid["y"] >= 0
            and grid["x"] + grid["w"] <= GRID_COLUMNS
        ):
            problems.append(f"{label}: gridPos {grid} outside the {GRID_COLUMNS}-column grid")
        elif id(panel) not in nested:
            for other, other_grid in placed:
                if _overlap(grid, other_grid):
                    problems.append(f"{label}: gridPos overlaps {other}")
            placed.append((f"panel {pid}", grid))
        if panel.get("type") in PANELS_WITHOUT_QUERIES:
            continue
        if not _is_var_datasource(panel.get("datasource")):
            problems.append(f"{label}: datasource is not {DATASOURCE_VAR}")
        targets = panel.get("targets")
        if not isinstance(targets, list) or not targets:
            problems.append(f"{label}: no targets")
            continue
        refs: set[str] = set()
        for target in targets:
            ref = target.get("refId")
            if not ref:
                problems.append(f"{label}: target without refId")
            elif ref in refs:
                problems.append(f"{label}: refId {ref} used twice")
            refs.add(ref)
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{label}: target {ref}: expr missing or empty")
                continue
            if "datasource" in target and not _is_var_datasource(target["datasource"]):
                problems.append(f"{label}: target {ref}: datasource is not {DATASOURCE_VAR}")
            for m in _VAR_RE.finditer(expr):
                name = m.group(1) or m.group(2) or m.group(3)
                builtin = name in _INTERVAL_BUILTINS | set(_NUMBER_BUILTINS) | _OTHER_BUILTINS
                if not builtin and name not in defined:
                    problems.append(f"{label}: target {ref}: variable ${name} is not defined")
    return problems


def check_dashboards(grafana_dir: Path = GRAFANA_DIR) -> list[str]:
    """Structure of every dashboard, and uid/title unique across them."""
    files = dashboard_files(grafana_dir)
    if not files:
        return [f"{_rel(grafana_dir)}: no dashboards (*.json)"]
    problems: list[str] = []
    uids: dict[str, str] = {}
    titles: dict[str, str] = {}
    for path in files:
        where = _rel(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{where}: invalid JSON: {exc}")
            continue
        problems += check_dashboard(doc, where)
        if not isinstance(doc, dict):
            continue
        for key, seen in (("uid", uids), ("title", titles)):
            value = doc.get(key)
            if isinstance(value, str) and value:
                if value in seen:
                    problems.append(f"{where}: {key} {value!r} also used by {seen[value]}")
                seen[value] = where
    return problems


def check_expressions(promtool: str, exprs: Mapping[str, str]) -> list[str]:
    """Parse every PromQL expression (``where -> expr``) with ``promtool check rules``."""
    if not exprs:
        return []
    wheres = list(exprs)
    doc = {
        "groups": [
            {"name": f"expr-{i}", "rules": [{"record": f"check:expr_{i}", "expr": exprs[w]}]}
            for i, w in enumerate(wheres)
        ]
    }
    with tempfile.TemporaryDirectory(prefix="flywheel-obs-") as tmp:
        path = Path(tmp) / "expressions.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
        rc, out = run_promtool(promtool, "check", "rules", str(path))
    if rc == 0:
        return []
    problems = []
    for line in out.splitlines():
        m = re.search(r'group "expr-(\d+)", rule \d+, "[^"]*": (.*)', line)
        if m:
            where = wheres[int(m.group(1))]
            problems.append(f"{where}: {m.group(2)} (expr: {exprs[where]!r})")
    return problems or [f"promtool check rules failed on the expressions:\n{out}"]


def check_dashboard_queries(promtool: str, grafana_dir: Path = GRAFANA_DIR) -> list[str]:
    """Every panel expression of every dashboard parses (Grafana variables substituted)."""
    exprs: dict[str, str] = {}
    problems: list[str] = []
    for path in dashboard_files(grafana_dir):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # reported by check_dashboards
        if not isinstance(doc, dict):
            continue
        variables = _variables(doc)
        for where, expr in dashboard_queries(doc):
            exprs[f"{_rel(path)}: {where}"] = grafana_to_promql(expr, variables)
    return problems + check_expressions(promtool, exprs)


# -- metric names ----------------------------------------------------------------------------

_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST_RE = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_MATCHERS_RE = re.compile(r"\{[^{}]*\}")
_METRIC_RE = re.compile(r"(?<![\w:$.])(flywheel[_:][A-Za-z0-9_:]*|up)(?![\w:])(?!\s*\()")


def expr_metrics(expr: str) -> set[str]:
    """Metric names (``flywheel_*``, ``flywheel:*`` and ``up``) referenced by a PromQL text."""
    text = _STRING_RE.sub('""', expr)
    text = _LABEL_LIST_RE.sub(" ", text)
    text = _MATCHERS_RE.sub("{}", text)
    return set(_METRIC_RE.findall(text))


def references(rules: Path = RULES_FILE, grafana_dir: Path = GRAFANA_DIR) -> dict[str, set[str]]:
    """Metric name -> where it is referenced (rule expressions, panel targets, variables)."""
    refs: dict[str, set[str]] = {}

    def add(expr: str, where: str) -> None:
        for name in expr_metrics(expr):
            refs.setdefault(name, set()).add(where)

    if rules.exists():
        for rule in load_rules(rules):
            name = rule.get("alert") or rule.get("record")
            add(str(rule.get("expr") or ""), f"{_rel(rules)}: {name}")
    for path, doc in load_dashboards(grafana_dir).items():
        if not isinstance(doc, dict):
            continue
        for where, expr in [*dashboard_queries(doc), *variable_queries(doc)]:
            add(expr, f"{_rel(path)}: {where}")
    return refs


def referenced_metrics(rules: Path = RULES_FILE, grafana_dir: Path = GRAFANA_DIR) -> set[str]:
    """Every metric name referenced by the rules and the dashboards."""
    return set(references(rules, grafana_dir))


_DEFINITION_RE = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*(?:name\s*=\s*)?"
    r"[\"']([A-Za-z_:][A-Za-z0-9_:]*)[\"']"
)


def code_dirs(root: Path = ROOT) -> list[Path]:
    return [root / "shared" / "src", *sorted((root / "services").glob("*/src"))]


def defined_metrics(dirs: Iterable[Path] | None = None) -> dict[str, tuple[str, str]]:
    """Metric definitions in the code: name as written -> (type, file)."""
    out: dict[str, tuple[str, str]] = {}
    for directory in code_dirs() if dirs is None else dirs:
        for file in sorted(directory.rglob("*.py")):
            for m in _DEFINITION_RE.finditer(file.read_text(encoding="utf-8")):
                out[m.group(2)] = (m.group(1), _rel(file))
    return out


def exposed_names(kind: str, name: str) -> set[str]:
    """Sample names prometheus_client exposes for a metric of ``kind`` named ``name``."""
    if kind == "Counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "Histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "Summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "Info":
        return {f"{name}_info"}
    return {name}


def known_metrics(dirs: Iterable[Path] | None = None) -> set[str]:
    """Every sample name the services expose, from the metric definitions in the code."""
    out: set[str] = set()
    for name, (kind, _) in defined_metrics(dirs).items():
        out |= exposed_names(kind, name)
    return out


def check_metric_names(
    refs: Mapping[str, Iterable[str]] | None = None,
    known: set[str] | None = None,
    recorded: set[str] | None = None,
) -> list[str]:
    """Every referenced name is defined in code, recorded by a rule, or ``up``."""
    refs = references() if refs is None else refs
    known = known_metrics() if known is None else known
    recorded = recorded_names() if recorded is None else recorded
    problems = []
    for name in sorted(refs):
        if name in known or name in recorded or name in SYNTHETIC_METRICS:
            continue
        places = "; ".join(sorted(refs[name]))
        if ":" in name:
            why = f"unknown recording rule {name} (not recorded by {_rel(RULES_FILE)})"
        else:
            why = f"unknown metric {name} (not defined in the code)"
        problems.append(f"{why}, used by: {places}")
    return problems


# -- all together ----------------------------------------------------------------------------


def run_checks(promtool: str, out: Any = None) -> list[str]:
    """Run every check; prints one status line per check to ``out``; returns all problems."""
    out = out or sys.stdout
    steps = [
        ("promtool check rules", lambda: check_rules(promtool)),
        ("promtool test rules", lambda: run_rule_tests(promtool)),
        ("dashboard structure", check_dashboards),
        ("dashboard queries parse", lambda: check_dashboard_queries(promtool)),
        ("metric names defined in code", check_metric_names),
    ]
    problems: list[str] = []
    for title, step in steps:
        try:
            found = step()
        except Exception as exc:  # a crashing check is a failed check, with its reason
            found = [f"{title}: check crashed: {type(exc).__name__}: {exc}"]
        print(f"{'ok  ' if not found else 'FAIL'} {title}", file=out)
        for problem in found:
            print(f"     {problem}", file=out)
        problems += found
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--promtool", help="path of promtool (default: $PROMTOOL, PATH, /usr/bin/promtool)"
    )
    parser.add_argument(
        "--list-metrics",
        action="store_true",
        help="print the referenced metric names, and code metrics no rule or dashboard uses",
    )
    args = parser.parse_args(argv)
    if args.list_metrics:
        refs = referenced_metrics()
        for name in sorted(refs):
            print(name)
        unused = sorted(
            name
            for name, (kind, _) in defined_metrics().items()
            if not exposed_names(kind, name) & refs
        )
        print(f"# defined in code, used by no rule or dashboard: {', '.join(unused) or 'none'}")
        return 0
    try:
        promtool = find_promtool(args.promtool)
    except PromtoolMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _, version = run_promtool(promtool, "--version")
    print(f"promtool: {promtool} ({version.splitlines()[0] if version else 'unknown version'})")
    problems = run_checks(promtool)
    if problems:
        print(f"{len(problems)} problem(s)")
        return 1
    refs = referenced_metrics()
    print(f"all checks passed ({len(refs)} metric names referenced, all defined)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
