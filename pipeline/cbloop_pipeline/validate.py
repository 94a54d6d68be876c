"""The event contract as SQL: why a logged line cannot be used, or NULL when it can.

Ingest evaluates these expressions inside its INSERT (no line goes through Python), turns a
line with a reason into a row the ingest's validity predicate drops, and quarantines it with
the reason (`quarantined_lines`, migration 0020). VW therefore never reads a line that breaks
the contract: a `c` that is not an object once crashed VW's DSJSON parser outright.

A decision line (DESIGN.md, "Event log") must have: `EventId` a non-empty string, a
parseable `Timestamp`, `experiment` and `model_id` strings, `c` an object whose `_multi` is a
non-empty list of objects, `a` a non-empty list of distinct 1-based positions in `_multi`, `p`
one probability in [0, 1] per entry of `a`, summing to 1 (within P_SUM_TOLERANCE), the chosen
one above 0, `action_ids` one string per `_multi` entry, `sample_prob` a number in [0, 1) and
`deferred`, when present, a boolean. An outcome line: `EventId` and `Timestamp` as above,
`kind` "reward" or "activate", a reward's `value` a finite JSON number that fits the 32-bit
floats VW learns in, and `idempotency_key` a string or null.

Each expression reads the columns `line` and `tt` (`types_sql`); the first rule a line breaks
is its reason.
"""

from __future__ import annotations

#: float32 rounding of a logged pmf over up to a few hundred actions stays far below this.
P_SUM_TOLERANCE = 1e-3
#: VW keeps weights and labels as 32-bit floats; a reward beyond this overflows to inf.
FLOAT32_MAX = 3.4028234663852886e38

_NUMBER = "('DOUBLE', 'BIGINT', 'UBIGINT')"
_INTEGER = "('BIGINT', 'UBIGINT')"

# json_type(line, [paths]) parses the line once for all of these.
_DECISION_PATHS = (
    "$.EventId",
    "$.Timestamp",
    "$.experiment",
    "$.model_id",
    "$.c",
    "$.c._multi",
    "$.a",
    "$.p",
    "$.action_ids",
    "$.sample_prob",
    "$.deferred",
)
_OUTCOME_PATHS = ("$.EventId", "$.Timestamp", "$.kind", "$.value", "$.idempotency_key")


def _types(paths: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{p}'" for p in paths)
    return f"try(json_type(line, [{listed}]))"


def _t(paths: tuple[str, ...], path: str) -> str:
    """The JSON type at `path` (NULL when absent), from the type list `tt`."""
    return f"tt[{paths.index(path) + 1}]"


def _all(list_sql: str, predicate: str) -> str:
    """Every element x of the list satisfies `predicate` (an empty list does)."""
    return f"coalesce(list_bool_and(list_transform({list_sql}, lambda x: {predicate})), true)"


def _common(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    return [
        ("NOT coalesce(json_valid(line), false)", "not valid JSON"),
        ("try(json_type(line)) IS DISTINCT FROM 'OBJECT'", "not a JSON object"),
        (f"{_t(paths, '$.EventId')} IS DISTINCT FROM 'VARCHAR'", "EventId must be a string"),
        ("json_extract_string(line, '$.EventId') = ''", "EventId is empty"),
        (
            f"{_t(paths, '$.Timestamp')} IS DISTINCT FROM 'VARCHAR' OR "
            "try_cast(json_extract_string(line, '$.Timestamp') AS TIMESTAMPTZ) IS NULL",
            "Timestamp must be an ISO-8601 time",
        ),
    ]


def _case(rules: list[tuple[str, str]]) -> str:
    branches = "\n".join(
        f"    WHEN {cond} THEN '{reason.replace(chr(39), chr(39) * 2)}'" for cond, reason in rules
    )
    return f"(CASE\n{branches}\n    END)"


def types_sql(kind: str) -> str:
    """SQL for column `tt`, which the reason expressions read: the JSON types of the line's
    top-level fields, in one parse of `line`."""
    return _types(_DECISION_PATHS if kind == "decisions" else _OUTCOME_PATHS)


def reason_sql(kind: str) -> str:
    """SQL for why column `line` (with its `tt`) is no usable line of `kind`; NULL: it is."""
    return decision_reason_sql() if kind == "decisions" else outcome_reason_sql()


def decision_reason_sql() -> str:
    """SQL for why column `line` is not a usable decision line (NULL: it is); needs `tt`."""
    paths = _DECISION_PATHS
    multi_n = "json_array_length(line, '$.c._multi')"
    a = "try_cast(json_extract(line, '$.a') AS BIGINT[])"
    p = "try_cast(json_extract(line, '$.p') AS DOUBLE[])"
    sample = "try_cast(json_extract(line, '$.sample_prob') AS DOUBLE)"
    rules = [
        *_common(paths),
        ("NOT starts_with(line, '{')", "the line must start with '{'"),
        (
            f"{_t(paths, '$.experiment')} IS DISTINCT FROM 'VARCHAR' OR "
            "json_extract_string(line, '$.experiment') = ''",
            "experiment must be a non-empty string",
        ),
        (f"{_t(paths, '$.model_id')} IS DISTINCT FROM 'VARCHAR'", "model_id must be a string"),
        (f"{_t(paths, '$.c')} IS NULL", "c is missing"),
        (f"{_t(paths, '$.c')} <> 'OBJECT'", "c must be an object"),
        (f"{_t(paths, '$.c._multi')} IS DISTINCT FROM 'ARRAY'", "c._multi must be a list"),
        (f"{multi_n} = 0", "c._multi is empty"),
        (
            "NOT " + _all("json_type(line, '$.c._multi[*]')", "x = 'OBJECT'"),
            "c._multi must hold objects",
        ),
        (f"{_t(paths, '$.a')} IS DISTINCT FROM 'ARRAY'", "a must be a list"),
        ("json_array_length(line, '$.a') = 0", "a is empty"),
        (
            "NOT " + _all("json_type(line, '$.a[*]')", f"x IN {_INTEGER}"),
            "a must hold integers",
        ),
        (
            "NOT " + _all(a, f"x BETWEEN 1 AND {multi_n}"),
            "a holds a position outside c._multi (1-based)",
        ),
        (f"len(list_distinct({a})) <> len({a})", "a repeats a position"),
        (f"{_t(paths, '$.p')} IS DISTINCT FROM 'ARRAY'", "p must be a list"),
        (
            "NOT " + _all("json_type(line, '$.p[*]')", f"x IN {_NUMBER}"),
            "p must hold numbers",
        ),
        (f"len({p}) <> len({a})", "p must hold one probability per entry of a"),
        ("NOT " + _all(p, "x BETWEEN 0 AND 1"), "p holds a probability outside [0, 1]"),
        (f"abs(list_sum({p}) - 1) > {P_SUM_TOLERANCE}", "p does not sum to 1"),
        (f"{p}[1] <= 0", "the chosen action's probability p[1] must be above 0"),
        (
            f"{_t(paths, '$.action_ids')} IS DISTINCT FROM 'ARRAY' OR "
            f"json_array_length(line, '$.action_ids') <> {multi_n} OR NOT "
            + _all("json_type(line, '$.action_ids[*]')", "x = 'VARCHAR'"),
            "action_ids must hold one string per c._multi entry",
        ),
        (
            f"{_t(paths, '$.sample_prob')} NOT IN {_NUMBER} OR "
            f"{_t(paths, '$.sample_prob')} IS NULL OR NOT ({sample} >= 0 AND {sample} < 1)",
            "sample_prob must be a number in [0, 1)",
        ),
        (
            f"{_t(paths, '$.deferred')} NOT IN ('BOOLEAN', 'NULL')",
            "deferred must be true or false",
        ),
    ]
    return _case(rules)


def outcome_reason_sql() -> str:
    """SQL for why column `line` is not a usable outcome line (NULL: it is); needs `tt`."""
    paths = _OUTCOME_PATHS
    kind = "json_extract_string(line, '$.kind')"
    value = "try_cast(json_extract(line, '$.value') AS DOUBLE)"
    value_type = _t(paths, "$.value")
    rules = [
        *_common(paths),
        (
            f"{_t(paths, '$.kind')} IS DISTINCT FROM 'VARCHAR' OR "
            f"{kind} NOT IN ('reward', 'activate')",
            "kind must be 'reward' or 'activate'",
        ),
        (
            f"{kind} = 'reward' AND ({value_type} IS NULL OR {value_type} NOT IN {_NUMBER})",
            "a reward's value must be a number",
        ),
        (
            f"{kind} = 'reward' AND NOT (isfinite({value}) AND abs({value}) <= {FLOAT32_MAX})",
            "a reward's value must be finite and within VW's 32-bit float range",
        ),
        (
            f"{_t(paths, '$.idempotency_key')} NOT IN ('VARCHAR', 'NULL')",
            "idempotency_key must be a string or null",
        ),
    ]
    return _case(rules)
