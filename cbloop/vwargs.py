"""Which Vowpal Wabbit arguments a user may set, and the exploration flags we derive.

Users tune learning (interactions, learning rate, regularization, hashing) but never the
flags that touch files, input formats or the reduction stack: those are owned by cbloop,
because the service and the pipeline must agree on how examples are parsed and where
models live.
"""

from __future__ import annotations

import shlex

# Flags that take a value, by every spelling VW accepts.
_WITH_VALUE = {
    "-q",
    "--quadratic",
    "--cubic",
    "--interactions",
    "--experimental_full_name_interactions",
    "-l",
    "--learning_rate",
    "--power_t",
    "--decay_learning_rate",
    "--initial_t",
    "--l1",
    "--l2",
    "--l1_state",
    "--l2_state",
    "-b",
    "--bit_precision",
    "--hash",
    "--hash_seed",
    "--random_seed",
    "--ignore",
    "--ignore_linear",
    "--keep",
    "--ngram",
    "--skips",
    "--affix",
    "--spelling",
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
_FLAGS = {
    "--noconstant",
    "--adaptive",
    "--normalized",
    "--invariant",
    "--sgd",
    "--coin",
    "--ftrl",
    "--pistol",
    "--freegrad",
    "--first_only",
    "--permutations",
    "--leave_duplicate_interactions",
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


class VWArgsError(ValueError):
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
