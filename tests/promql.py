"""Every PromQL expression vigil ships: the Grafana dashboard's queries and the alerting rules.

tests/test_deploy.py checks that each one parses (promtool) and names only metrics vigil exports;
an integration test against a real Prometheus can import this module to check that each one
returns data:

    for e in promql.all_expressions():
        query(e.render())                   # the whole expression (alerts are empty when healthy)
        for s in promql.selectors(e.expr):  # each series it reads, which must exist
            query(s)

Only the standard library and PyYAML are used.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "vigil.json"
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"

# Grafana's built-in variables that may appear in a query, and what render() substitutes.
GRAFANA_BUILTINS = ("__rate_interval", "__interval", "__range")

AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
})
# Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = LABEL_LIST_KEYWORDS | {"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan"}

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class Expr:
    source: str  # "dashboard" or "rules"
    name: str  # panel title and refId, or alert/record name
    expr: str  # as written; dashboard queries may hold Grafana variables

    def render(self, rate_interval: str = "1m", interval: str = "15s", range_: str = "1h") -> str:
        """The expression with Grafana's built-in variables replaced, ready for the Prometheus API."""
        values = {"__rate_interval": rate_interval, "__interval": interval, "__range": range_}

        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2) or m.group(3)
            if name not in values:
                raise KeyError(f"{self.name}: unknown Grafana variable ${name} in {self.expr!r}")
            return values[name]

        return _VARIABLE.sub(sub, self.expr)

    def __str__(self) -> str:
        return f"{self.source}: {self.name}: {self.expr}"


def _panels(panels: list[dict]) -> list[dict]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(_panels(p.get("panels", [])))  # collapsed rows nest their panels
    return out


def dashboard_panels(path: Path = DASHBOARD) -> list[dict]:
    """Every panel of the dashboard, rows included, nested ones flattened."""
    return _panels(json.loads(Path(path).read_text())["panels"])


def dashboard_expressions(path: Path = DASHBOARD) -> list[Expr]:
    dash = json.loads(Path(path).read_text())
    out = []
    for p in _panels(dash["panels"]):
        for t in p.get("targets", []):
            if t.get("expr", "").strip():
                out.append(Expr("dashboard", f"{p['title']} [{t.get('refId', '?')}]", t["expr"].strip()))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if q:
                out.append(Expr("dashboard", f"variable {v['name']}", q.strip()))
    return out


def rule_expressions(path: Path = RULES) -> list[Expr]:
    doc = yaml.safe_load(Path(path).read_text())
    out = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            out.append(Expr("rules", rule.get("alert") or rule["record"], str(rule["expr"]).strip()))
    return out


def all_expressions() -> list[Expr]:
    return dashboard_expressions() + rule_expressions()


def _strip_strings(expr: str) -> str:
    """Blank out string literals so their content is never read as PromQL."""
    out, i, n = [], 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            out.append(c + " " * (min(j, n - 1) - i - 1) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _close(expr: str, i: int, open_: str, close: str) -> int:
    """Index just past the bracket that closes the one at expr[i]."""
    depth = 0
    for j in range(i, len(expr)):
        if expr[j] == open_:
            depth += 1
        elif expr[j] == close:
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError(f"unbalanced {open_!r} in {expr!r}")


def selectors(expr: str) -> list[str]:
    """The vector selectors an expression reads, with their label matchers, in order, deduplicated.

    `rate(x{a="b"}[5m]) / y` -> ['x{a="b"}', 'y']. Grafana variables are left as written.
    """
    blank = _strip_strings(expr)
    found: list[str] = []
    i, n = 0, len(blank)
    while i < n:
        c = blank[i]
        if c == "[":  # range or subquery: durations only
            i = _close(blank, i, "[", "]")
            continue
        if c == "{":  # a bare {__name__=...} selector: not used by vigil, not a metric name
            i = _close(blank, i, "{", "}")
            continue
        if c == "$":  # Grafana variable
            m = _VARIABLE.match(blank, i)
            i = m.end() if m else i + 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and blank[i + 1].isdigit()):
            m = re.compile(r"[0-9.eE+\-xXa-fA-F_]+(?:[smhdwy]|ms)*").match(blank, i)
            i = m.end()
            continue
        m = _IDENT.match(blank, i)
        if not m:
            i += 1
            continue
        word, i = m.group(0), m.end()
        j = i
        while j < n and blank[j].isspace():
            j += 1
        nxt = blank[j] if j < n else ""
        low = word.lower()
        if low in LABEL_LIST_KEYWORDS:
            if nxt == "(":
                i = _close(blank, j, "(", ")")
            continue
        if low in KEYWORDS:
            continue
        if nxt == "(":  # function call or aggregation
            continue
        if word in AGGREGATIONS and blank[j:j + 2] in ("by", "wi"):  # `sum by (...)(...)`
            continue
        if nxt == "{":
            end = _close(blank, j, "{", "}")
            found.append(word + expr[j:end])  # matchers from the original, strings intact
            i = end
        else:
            found.append(word)
    return list(dict.fromkeys(found))


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression reads (histogram names keep their _bucket/_sum/_count)."""
    return {s.split("{", 1)[0] for s in selectors(expr)}


def grafana_variables(expr: str) -> set[str]:
    return {m.group(1) or m.group(2) or m.group(3) for m in _VARIABLE.finditer(expr)}
