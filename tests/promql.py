"""The metric names a PromQL expression selects, and the series names an exposition offers.

Enough of PromQL's lexical structure to tell a metric name from everything
else that looks like one: string literals, label matchers (``{...}``, whose
``__name__="x"`` does name a metric), range and subquery brackets, numbers and
durations, comments, keywords, function and aggregation names (an identifier
followed by ``(``), and the label lists after ``by``, ``without``, ``on``,
``ignoring``, ``group_left`` and ``group_right``.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<brackets>\[[^\]]*\])
  | (?P<number>(?:0x[0-9a-fA-F]+|\d[\w.]*(?:[eE][+-]?\d+)?|\.\d+))
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

#: Aggregation operators: a modifier may stand between them and their ``(``.
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
#: Words that are never metric names outside a label matcher (PromQL reserves them).
KEYWORDS = AGGREGATIONS | frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
)
#: Modifiers followed by a parenthesised list of label names.
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


def _tokens(expr: str) -> list[tuple[str, str]]:
    found = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            found.append((kind, m.group()))
    return found


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects (by bare name or by a ``__name__`` matcher)."""
    tokens = _tokens(expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "{":  # label matchers: only __name__ names a metric
            end = i + 1
            while end < len(tokens) and tokens[end][1] != "}":
                end += 1
            matchers = tokens[i + 1 : end]
            for (_, label), (_, op), (value_kind, value) in zip(
                matchers, matchers[1:], matchers[2:], strict=False
            ):
                if label == "__name__" and op == "=" and value_kind == "string":
                    names.add(value[1:-1])
            i = end + 1
            continue
        if kind == "ident" and text in LABEL_LISTS and following == "(":
            end = i + 1
            while end < len(tokens) and tokens[end][1] != ")":
                end += 1
            i = end + 1
            continue
        if kind == "ident" and text not in KEYWORDS and following != "(":
            names.add(text)
        i += 1
    return names


#: The sample names each metric type exposes beside (or instead of) its family name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def series_names(exposition: str) -> set[str]:
    """Every series name an exposition offers, including families without samples yet.

    A labelled counter has no sample before its first increment, but its
    ``# TYPE`` line says what it will be called; a histogram or summary family
    offers its ``_bucket``, ``_count`` and ``_sum`` series.
    """
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names
