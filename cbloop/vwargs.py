"""Which Vowpal Wabbit arguments a user may set, and the exploration flags we derive.

Users tune learning (interactions, learning rate, regularization, hashing) but never the
flags that touch files, input formats or the reduction stack: those are owned by cbloop,
because the service and the pipeline must agree on how examples are parsed and where
models live.
"""

from __future__ import annotations

import shlex

from cbloop.errors import ConfigError

# Flags that shape the features or the optimiser. They carry over to any other learner on the
# same examples (the DR reward model), unlike the policy's own flags below.
_FEATURE_WITH_VALUE = frozenset(
    {
        "-q",
        "--quadratic",
        "--cubic",
        "--interactions",
        "--experimental_full_name_interactions",
        "-b",
        "--bit_precision",
        "--hash",
        "--hash_seed",
        "--ignore",
        "--ignore_linear",
        "--keep",
        "--ngram",
        "--skips",
        "--affix",
        "--spelling",
        "-l",
        "--learning_rate",
        "--power_t",
        "--initial_t",
        "--decay_learning_rate",
        "--l1",
        "--l2",
    }
)
_FEATURE_SWITCHES = frozenset(
    {
        "--noconstant",
        "--permutations",
        "--leave_duplicate_interactions",
        "--adaptive",
        "--normalized",
        "--invariant",
        "--sgd",
    }
)
# The rest of what a user may set, by every spelling VW accepts.
_WITH_VALUE = _FEATURE_WITH_VALUE | {
    "--l1_state",
    "--l2_state",
    "--random_seed",
    "--cb_type",
    "--loss_function",
    "--quantile_tau",
    "--nn",
    "--ftrl_alpha",
    "--ftrl_beta",
    "--clip_p",
    "--cb_min_cost",
    "--cb_max_cost",
    "--max_prediction",
    "--min_prediction",
    "--link",
    "-C",
    "--constant",
}
_FLAGS = _FEATURE_SWITCHES | {
    "--coin",
    "--ftrl",
    "--pistol",
    "--freegrad",
    "--first_only",
    "--baseline",
    "--sort_features",
    "--holdout_off",
    "--noop",
}
# Exploration is configured under `exploration`, so its raw flags are refused with a pointer there.
_EXPLORATION = {
    "--epsilon",
    "--bag",
    "--cover",
    "--softmax",
    "--squarecb",
    "--first",
    "--lambda",
    "--gamma_scale",
    "--gamma_exponent",
    "--regcb",
    "--regcbopt",
    "--rnd",
    "--synthcover",
    "--psi",
    "--nounif",
    "--large_action_space",
}


class VWArgsError(ConfigError, ValueError):
    """A user-supplied VW argument is not allowed or malformed."""


def validate_user_args(args: str) -> list[str]:
    """Return the tokens of `args` if every flag is whitelisted; raise naming the first bad one."""
    try:
        tokens = shlex.split(args)
    except ValueError as exc:
        raise VWArgsError(f"cannot parse VW arguments {args!r}: {exc}") from exc
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        # VW (boost) takes "--flag=value" but reads "-b=18" as the value "=18".
        flag, eq, _ = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        if flag in _EXPLORATION:
            raise VWArgsError(
                f"VW argument {flag} is set through the experiment's 'exploration' section, "
                "not vw_args"
            )
        if flag in _WITH_VALUE:
            if not eq:
                if i + 1 >= len(tokens):
                    raise VWArgsError(f"VW argument {flag} needs a value")
                i += 1
        elif flag not in _FLAGS:
            raise VWArgsError(
                f"VW argument {tok!r} is not allowed (file, input-format, model-path and "
                "reduction flags are managed by cbloop)"
            )
        elif eq:
            raise VWArgsError(f"VW argument {flag} is a switch and takes no value")
        i += 1
    return tokens


def exploration_args(
    kind: str, *, epsilon: float, num_policies: int, lambda_: float, gamma_scale: float
) -> list[str]:
    """VW flags for an exploration policy, in the reference workflow's terms."""
    if kind == "egreedy":
        return ["--epsilon", _num(epsilon)]
    if kind == "bag":
        return ["--bag", str(num_policies), "--epsilon", _num(epsilon)]
    if kind == "cover":
        return ["--cover", str(num_policies), "--epsilon", _num(epsilon)]
    if kind == "softmax":
        return ["--softmax", "--lambda", _num(lambda_)]
    if kind == "squarecb":
        return ["--squarecb", "--gamma_scale", _num(gamma_scale)]
    raise VWArgsError(f"unknown exploration type {kind!r}")


def _num(x: float) -> str:
    return repr(float(x))


def feature_args(args: str) -> list[str]:
    """The feature- and optimiser-shaping flags of a full VW argument string (with values)."""
    tokens = shlex.split(args)
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        flag, eq, _ = tok.partition("=")
        if flag in _FEATURE_WITH_VALUE:
            if eq:
                kept.append(tok)
            elif i + 1 < len(tokens):
                kept.extend(tokens[i : i + 2])
                i += 1
        elif flag in _FEATURE_SWITCHES:
            kept.append(tok)
        i += 1
    return kept
