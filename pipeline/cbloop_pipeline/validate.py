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

`checked_sql` adds the reason to a query over lines: the first rule a line breaks.
"""

from __future__ import annotations

from dataclasses import dataclass

#: float32 rounding of a logged pmf over up to a few hundred actions stays far below this.
P_SUM_TOLERANCE = 1e-3
#: VW keeps weights and labels as 32-bit floats; a reward beyond this overflows to inf.
FLOAT32_MAX = 3.4028234663852886e38

_NUMBER = "('DOUBLE', 'BIGINT', 'UBIGINT')"
_INTEGER = "('BIGINT', 'UBIGINT')"


@dataclass(frozen=True)
class _Shape:
    """Paths whose JSON types (`tt`) and values as text (`ex`) are read in one parse each."""

    types: tuple[str, ...]
    values: tuple[str, ...]

    def t(self, path: str) -> str:
        return f"tt[{self.types.index(path) + 1}]"

    def v(self, path: str) -> str:
        return f"ex[{self.values.index(path) + 1}]"

    def base_columns(self) -> str:
        t = ", ".join(f"'{p}'" for p in self.types)
        v = ", ".join(f"'{p}'" for p in self.values)
        # try(): a line that is not JSON gets NULL lists (and the reason "not valid JSON").
        return f"try(json_type(line, [{t}])) AS tt, try(json_extract_string(line, [{v}])) AS ex"


_DECISION = _Shape(
    types=(
        "$",
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
        "$.mode",
        "$.holdout",
        "$.unit_id",
        "$.holdout_share",
        "$.baseline_action",
    ),
    values=(
        "$.EventId",
        "$.Timestamp",
        "$.experiment",
        "$.model_id",
        "$.c._multi",
        "$.a",
        "$.p",
        "$.action_ids",
        "$.sample_prob",
        "$.deferred",
        "$.mode",
        "$.holdout_share",
        "$.baseline_action",
    ),
)
#: The learning modes a decision line may record (cbloop.settings.LearningMode).
MODES = ("online", "apprentice", "logging_only")
#: Largest holdout share the settings allow.
MAX_HOLDOUT_SHARE = 0.5
_OUTCOME = _Shape(
    types=("$", "$.EventId", "$.Timestamp", "$.kind", "$.value", "$.idempotency_key"),
    values=("$.EventId", "$.Timestamp", "$.kind", "$.value", "$.idempotency_key"),
)


def _only(list_sql: str, allowed: str) -> str:
    """Every element of the list is one of `allowed`, an SQL tuple of strings (an empty list
    passes). No lambda: this runs on every line, and list_has_all is several times faster."""
    return f"list_has_all([{allowed[1:-1]}], {list_sql})"


def _element_types(shape: _Shape, path: str) -> str:
    """The JSON types of the elements of the array at `path` (NULL if it is no array)."""
    return f"CASE WHEN {shape.t(path)} = 'ARRAY' THEN json_type({shape.v(path)}, '$[*]') END"


def _common(shape: _Shape) -> list[tuple[str, str]]:
    return [
        ("tt IS NULL", "not valid JSON"),
        (f"{shape.t('$')} <> 'OBJECT'", "not a JSON object"),
        (f"{shape.t('$.EventId')} IS DISTINCT FROM 'VARCHAR'", "EventId must be a string"),
        (f"{shape.v('$.EventId')} = ''", "EventId is empty"),
        (
            f"{shape.t('$.Timestamp')} IS DISTINCT FROM 'VARCHAR' OR "
            f"try_cast({shape.v('$.Timestamp')} AS TIMESTAMPTZ) IS NULL",
            "Timestamp must be an ISO-8601 time",
        ),
    ]


def _case(rules: list[tuple[str, str]]) -> str:
    branches = "\n".join(
        f"    WHEN {cond} THEN '{reason.replace(chr(39), chr(39) * 2)}'" for cond, reason in rules
    )
    return f"(CASE\n{branches}\n    END)"


def _decision_derived() -> str:
    d = _DECISION
    return ", ".join(
        [
            f"{_element_types(d, '$.c._multi')} AS v_multi_types",
            f"{_element_types(d, '$.a')} AS v_a_types",
            f"{_element_types(d, '$.p')} AS v_p_types",
            f"{_element_types(d, '$.action_ids')} AS v_id_types",
            f"try_cast({d.v('$.a')} AS BIGINT[]) AS v_a",
            f"try_cast({d.v('$.p')} AS DOUBLE[]) AS v_p",
            f"try_cast({d.v('$.sample_prob')} AS DOUBLE) AS v_sample",
        ]
    )


def _decision_reason() -> str:
    d = _DECISION
    rules = [
        *_common(d),
        ("NOT starts_with(line, '{')", "the line must start with '{'"),
        (
            f"{d.t('$.experiment')} IS DISTINCT FROM 'VARCHAR' OR {d.v('$.experiment')} = ''",
            "experiment must be a non-empty string",
        ),
        (f"{d.t('$.model_id')} IS DISTINCT FROM 'VARCHAR'", "model_id must be a string"),
        (f"{d.t('$.c')} IS NULL", "c is missing"),
        (f"{d.t('$.c')} <> 'OBJECT'", "c must be an object"),
        ("v_multi_types IS NULL", "c._multi must be a list"),
        ("len(v_multi_types) = 0", "c._multi is empty"),
        ("NOT " + _only("v_multi_types", "('OBJECT')"), "c._multi must hold objects"),
        ("v_a_types IS NULL", "a must be a list"),
        ("len(v_a_types) = 0", "a is empty"),
        ("NOT " + _only("v_a_types", _INTEGER), "a must hold integers"),
        (
            "NOT (list_min(v_a) >= 1 AND list_max(v_a) <= len(v_multi_types))",
            "a holds a position outside c._multi (1-based)",
        ),
        ("len(list_distinct(v_a)) <> len(v_a)", "a repeats a position"),
        ("v_p_types IS NULL", "p must be a list"),
        ("NOT " + _only("v_p_types", _NUMBER), "p must hold numbers"),
        ("len(v_p) <> len(v_a)", "p must hold one probability per entry of a"),
        ("NOT (list_min(v_p) >= 0 AND list_max(v_p) <= 1)", "p holds a probability outside [0, 1]"),
        (f"abs(list_sum(v_p) - 1) > {P_SUM_TOLERANCE}", "p does not sum to 1"),
        ("v_p[1] <= 0", "the chosen action's probability p[1] must be above 0"),
        (
            "v_id_types IS NULL OR len(v_id_types) <> len(v_multi_types) OR NOT "
            + _only("v_id_types", "('VARCHAR')"),
            "action_ids must hold one string per c._multi entry",
        ),
        (
            f"{d.t('$.sample_prob')} IS NULL OR {d.t('$.sample_prob')} NOT IN {_NUMBER} "
            "OR NOT (v_sample >= 0 AND v_sample < 1)",
            "sample_prob must be a number in [0, 1)",
        ),
        (f"{d.t('$.deferred')} NOT IN ('BOOLEAN', 'NULL')", "deferred must be true or false"),
        *_mode_rules(d),
    ]
    return _case(rules)


def _mode_rules(d: _Shape) -> list[tuple[str, str]]:
    """The keys of learning modes and holdout (all optional: older lines lack them)."""
    modes = ", ".join(f"'{m}'" for m in MODES)
    share = f"try_cast({d.v('$.holdout_share')} AS DOUBLE)"
    return [
        (
            f"{d.t('$.mode')} NOT IN ('VARCHAR', 'NULL') OR {d.v('$.mode')} NOT IN ({modes})",
            "mode must be online, apprentice or logging_only",
        ),
        (f"{d.t('$.holdout')} NOT IN ('BOOLEAN', 'NULL')", "holdout must be true or false"),
        (f"{d.t('$.unit_id')} NOT IN ('VARCHAR', 'NULL')", "unit_id must be a string"),
        (
            f"{d.t('$.holdout_share')} NOT IN {_NUMBER[:-1]}, 'NULL') OR NOT "
            f"coalesce({share} >= 0 AND {share} <= {MAX_HOLDOUT_SHARE}, true)",
            f"holdout_share must be a number in [0, {MAX_HOLDOUT_SHARE}]",
        ),
        (
            f"{d.t('$.baseline_action')} NOT IN ('VARCHAR', 'NULL') OR "
            # try(): the branches are evaluated for every line, also those whose action_ids
            # an earlier rule already refused.
            f"({d.t('$.baseline_action')} = 'VARCHAR' AND NOT list_contains("
            f"try(from_json({d.v('$.action_ids')}, '[\"VARCHAR\"]')), "
            f"{d.v('$.baseline_action')}))",
            "baseline_action must be one of action_ids",
        ),
    ]


def _outcome_reason() -> str:
    o = _OUTCOME
    kind = o.v("$.kind")
    value = f"try_cast({o.v('$.value')} AS DOUBLE)"
    value_type = o.t("$.value")
    rules = [
        *_common(o),
        (
            f"{o.t('$.kind')} IS DISTINCT FROM 'VARCHAR' OR {kind} NOT IN ('reward', 'activate')",
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
            f"{o.t('$.idempotency_key')} NOT IN ('VARCHAR', 'NULL')",
            "idempotency_key must be a string or null",
        ),
    ]
    return _case(rules)


def checked_sql(kind: str, source: str) -> str:
    """`source` (a subquery with a `line` column) plus `reject_reason`: why the line is no
    usable line of `kind` (`decisions` | `outcomes`), or NULL when it is one.

    Each line is parsed twice in full (types, values), plus its small arrays and `_multi`.
    """
    if kind == "decisions":
        base, derived, reason = _DECISION.base_columns(), _decision_derived(), _decision_reason()
    else:
        base, derived, reason = _OUTCOME.base_columns(), "NULL AS _none", _outcome_reason()
    return (
        f"(SELECT *, {reason} AS reject_reason FROM "
        f"(SELECT *, {derived} FROM (SELECT *, {base} FROM {source})))"
    )
