"""Lints against the metrics contract (OBS-01, `specs/metrics/metrics.yaml`).

Each returns its problems as a list of sentences (empty: clean), so a test shows them all:

- `naming_problems(contract)`: the contract follows Prometheus naming — base units
  (durations `_seconds`, sizes `_bytes`, nothing in `_ms`/`_mb`/...), a histogram names
  its `unit` and ends in it, a duration is a `_seconds` series, counters end in `_total`.
- `scrape_problems(scrape, exporter)`: a live `/metrics` scrape against the contract —
  names, types, labels, cardinality budgets, no per-task labels, nothing missing.
- `promql_problems(expr, contract)` and `dashboard_problems(dashboard, contract)`: every
  series and label a PromQL expression (a Grafana panel's query) names is one the
  contract defines, and every function it calls is PromQL's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from specs import metrics_contract

__all__ = [
    "Scrape",
    "contract",
    "dashboard_problems",
    "naming_problems",
    "promql_problems",
    "scrape_problems",
    "series",
]

_TASK_ID_LIKE = re.compile(r"^[0-9a-f]{32}$")
# Unit suffixes that are not base units, and words that say a series is a duration.
_NON_BASE_UNITS = re.compile(
    r"_(ms|millis|milliseconds|us|micros|microseconds|ns|nanoseconds|minutes|hours|days"
    r"|kb|mb|gb|kib|mib|gib|kilobytes|megabytes|gigabytes)(_|$)"
)
_DURATION_WORDS = ("latency", "duration", "wait", "_time", "elapsed", "age")
_UNITS = frozenset({"seconds", "bytes", "tokens", "ratio"})


def contract() -> dict[str, Any]:
    """The metrics contract, parsed."""
    parsed: dict[str, Any] = yaml.safe_load(metrics_contract())
    return parsed


def exporters_of(spec: Mapping[str, Any]) -> frozenset[str]:
    raw = spec["exporter"]
    return frozenset([raw] if isinstance(raw, str) else raw)


# -- the contract's own names ----------------------------------------------------------


def naming_problems(doc: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for name, spec in doc["metrics"].items():
        kind, unit = spec["type"], spec.get("unit")
        if _NON_BASE_UNITS.search(name):
            problems.append(f"{name}: not a base unit (durations _seconds, sizes _bytes)")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: a counter's name ends in _total")
        if kind != "counter" and name.endswith("_total"):
            problems.append(f"{name}: only counters end in _total")
        if kind == "histogram" and unit is None:
            problems.append(f"{name}: a histogram names its unit (unit: seconds, bytes, ...)")
        if unit is not None:
            if unit not in _UNITS:
                problems.append(f"{name}: unit {unit!r} is not one of {sorted(_UNITS)}")
            if not name.removesuffix("_total").endswith(f"_{unit}"):
                problems.append(f"{name}: its unit is {unit}, so the name ends in _{unit}")
        if any(w in name for w in _DURATION_WORDS) and not name.endswith("_seconds"):
            problems.append(f"{name}: a duration's name ends in _seconds")
        if "milli" in spec.get("help", "").lower():
            problems.append(f"{name}: its help speaks of milliseconds; the unit is seconds")
    return problems


# -- a live scrape -----------------------------------------------------------------------


@dataclass
class Scrape:
    problems: list[str]
    families: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        for sample in self.families[name].samples:
            if sample.name in (name, name + "_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                return float(sample.value)
        raise KeyError((name, labels))

    def samples(self, name: str) -> list[Any]:
        """Every sample of the family `name` (a histogram's `_bucket`/`_count`/`_sum`)."""
        return list(self.families[name].samples) if name in self.families else []


def scrape_problems(scrape: str, exporter: str, doc: Mapping[str, Any] | None = None) -> Scrape:
    doc = contract() if doc is None else doc
    prefix = doc["prefix"]
    families = {
        f.name: f for f in text_string_to_metric_families(scrape) if f.name.startswith(prefix)
    }
    problems: list[str] = []
    for name, family in families.items():
        spec = doc["metrics"].get(
            name.removeprefix(prefix) + ("_total" if family.type == "counter" else "")
        )
        if spec is None:
            problems.append(f"{name} is not in the contract")
            continue
        if spec["type"] != family.type:
            problems.append(f"{name} is a {family.type}, the contract says {spec['type']}")
        values: dict[str, set[str]] = {}
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label in ("le", "quantile"):
                    continue
                values.setdefault(label, set()).add(value)
                if label in doc["forbidden_labels"] or _TASK_ID_LIKE.match(value):
                    problems.append(f"{name} carries a per-task label {label}={value}")
        for label, seen in values.items():
            budget = spec["labels"].get(label)
            if budget is None:
                problems.append(f"{name} has label {label} not in the contract")
            elif len(seen) > budget:
                problems.append(f"{name}{{{label}}} has {len(seen)} values, budget {budget}")
    expected = {n for n, s in doc["metrics"].items() if exporter in exporters_of(s)}
    present = {
        n.removeprefix(prefix) + ("_total" if f.type == "counter" else "")
        for n, f in families.items()
    }
    problems += [f"{n} is missing from the scrape" for n in sorted(expected - present)]
    return Scrape(problems, families)


# -- PromQL ------------------------------------------------------------------------------


def series(doc: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Every series name a query may select, with the labels it may carry."""
    prefix = doc["prefix"]
    names: dict[str, frozenset[str]] = {}
    for name, spec in doc["metrics"].items():
        labels = frozenset(spec["labels"]) | {"instance", "job"}
        full = prefix + name
        if spec["type"] == "histogram":
            names[full + "_bucket"] = labels | {"le"}
            names[full + "_sum"] = names[full + "_count"] = labels
        else:
            names[full] = labels
    return names


_FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "absent_over_time",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "time",
        "timestamp",
        "vector",
        "year",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_TOKEN = re.compile(
    r"""\s+|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)"""
    r"""|(?P<range>\[[^\]]*\])|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"""
    r"""|(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"""
    r"""|(?P<match>=~|!~|!=|==|>=|<=|=)|(?P<punct>[(){},+\-*/%^<>@])"""
)


def _tokens(expr: str) -> Iterator[tuple[str, str]]:
    expr = re.sub(r"\$\{?\w+\}?", "1", expr)  # Grafana variables: $__rate_interval, ${pool}
    position = 0
    while position < len(expr):
        found = _TOKEN.match(expr, position)
        if found is None:
            raise ValueError(f"cannot read {expr[position : position + 20]!r}")
        position = found.end()
        if found.lastgroup is not None:
            yield found.lastgroup, found.group()


def promql_problems(expr: str, doc: Mapping[str, Any]) -> list[str]:
    """What in `expr` the contract does not define (series, labels), or is not PromQL."""
    known = series(doc)
    try:
        tokens = list(_tokens(expr))
    except ValueError as exc:
        return [f"{expr!r}: {exc}"]
    problems: list[str] = []
    used: list[str] = []
    labels: list[str] = []
    depth = 0
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth < 0:
                problems.append(f"{expr!r}: unbalanced ')'")
        elif text == "{":  # a selector's matchers
            i, names = _matchers(tokens, i)
            labels += names
        elif kind == "ident":
            if text in _GROUPING and following == "(":
                i, names = _label_list(tokens, i + 1)
                labels += names
                continue
            if following == "(" or following in ("by", "without"):  # `sum by (l) (...)`
                if text not in _FUNCTIONS:
                    problems.append(f"{expr!r}: {text}() is not a PromQL function")
            elif text not in _KEYWORDS:
                used.append(text)
                if text not in known:
                    problems.append(f"{expr!r}: series {text} is not in the metrics contract")
        i += 1
    if depth != 0:
        problems.append(f"{expr!r}: unbalanced parentheses")
    if not used:
        problems.append(f"{expr!r}: selects no series")
    allowed = frozenset().union(*(known.get(n, frozenset()) for n in used))
    for label in labels:
        if label not in allowed:
            problems.append(f"{expr!r}: label {label} is not one of its series' labels")
    return problems


def _matchers(tokens: list[tuple[str, str]], i: int) -> tuple[int, list[str]]:
    """Read `{label op "value", ...}` from tokens[i] == '{'; returns the index of '}'."""
    names: list[str] = []
    i += 1
    while i < len(tokens) and tokens[i][1] != "}":
        if tokens[i][0] == "ident" and i + 1 < len(tokens) and tokens[i + 1][0] == "match":
            names.append(tokens[i][1])
        i += 1
    return i, names


def _label_list(tokens: list[tuple[str, str]], i: int) -> tuple[int, list[str]]:
    """Read `(a, b)` from tokens[i] == '('; returns the index after ')'."""
    names: list[str] = []
    i += 1
    while i < len(tokens) and tokens[i][1] != ")":
        if tokens[i][0] == "ident":
            names.append(tokens[i][1])
        i += 1
    return i + 1, names


# -- a Grafana dashboard -----------------------------------------------------------------

_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<query>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$")


def panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_problems(dashboard: Mapping[str, Any], doc: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for panel in panels(dashboard):
        title = panel.get("title", "?")
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                problems.append(f"panel {title!r}: a target without a PromQL expr")
                continue
            problems += [f"panel {title!r}: {p}" for p in promql_problems(expr, doc)]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query") if isinstance(query, Mapping) else query
        found = _LABEL_VALUES.match(query or "")
        if found is None:
            problems.append(f"variable {variable.get('name')!r}: not label_values(...): {query!r}")
            continue
        name = f"variable {variable.get('name')!r}"
        problems += [f"{name}: {p}" for p in promql_problems(found["query"], doc)]
        labels = frozenset().union(
            *(series(doc).get(t, frozenset()) for _, t in _tokens(found["query"]))
        )
        if found["label"] not in labels:
            problems.append(f"{name}: label {found['label']} is not one of its series' labels")
    return problems
