"""The vw_args whitelist: what users may tune, in the spellings VW itself accepts."""

from __future__ import annotations

import re

import pytest
import vowpalwabbit

from cbloop import vwargs
from cbloop.vwargs import VWArgsError, exploration_args, validate_user_args

# One plausible value per value-taking flag, so every whitelisted flag can be tried in VW.
FLAG_VALUES: dict[str, str] = {
    "-q": "ab",
    "--quadratic": "ab",
    "--cubic": "abc",
    "--interactions": "::",
    "--experimental_full_name_interactions": "a|b",
    "-l": "0.5",
    "--learning_rate": "0.5",
    "--power_t": "0.5",
    "--decay_learning_rate": "0.9",
    "--initial_t": "1",
    "--l1": "1e-6",
    "--l2": "1e-6",
    "--l1_state": "0",
    "--l2_state": "1",
    "-b": "18",
    "--bit_precision": "18",
    "--hash": "all",
    "--hash_seed": "3",
    "--random_seed": "3",
    "--ignore": "x",
    "--ignore_linear": "x",
    "--keep": "x",
    "--ngram": "2",
    "--affix": "+2",
    "--spelling": "x",
    "--cb_type": "mtr",
    "--loss_function": "squared",
    "--nn": "2",
    "--ftrl_alpha": "0.1",
    "--ftrl_beta": "0.1",
    "--clip_p": "0.01",
    "--cb_min_cost": "-1",
    "--cb_max_cost": "1",
    "--max_prediction": "1",
    "--min_prediction": "-1",
    "--link": "identity",
    "-C": "0.5",
    "--constant": "0.5",
    "--skips": "1",
    "--quantile_tau": "0.3",
}
# Flags VW accepts only beside another one.
NEEDS: dict[str, str] = {"--skips": "--ngram 2", "--quantile_tau": "--loss_function quantile"}
SWITCHES = [
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
]


def _opens_in_vw(args: str) -> None:
    ws = vowpalwabbit.Workspace(f"--cb_explore_adf --dsjson --quiet {args}")
    ws.finish()


@pytest.mark.parametrize(("flag", "value"), sorted(FLAG_VALUES.items()))
def test_flag_with_value_is_allowed_separately_and_vw_accepts_it(flag: str, value: str) -> None:
    assert validate_user_args(f"{flag} {value}") == [flag, value]
    _opens_in_vw(f"{NEEDS.get(flag, '')} {flag} {value}")


@pytest.mark.parametrize(
    ("flag", "value"), sorted((f, v) for f, v in FLAG_VALUES.items() if f.startswith("--"))
)
def test_long_flag_with_equals_value_is_allowed_and_vw_accepts_it(flag: str, value: str) -> None:
    assert validate_user_args(f"{flag}={value}") == [f"{flag}={value}"]
    _opens_in_vw(f"{NEEDS.get(flag, '')} {flag}={value}")


@pytest.mark.parametrize("switch", SWITCHES)
def test_switch_is_allowed_and_vw_accepts_it(switch: str) -> None:
    assert validate_user_args(switch) == [switch]
    _opens_in_vw(switch)


def test_switch_followed_by_a_positional_is_refused() -> None:
    # A positional argument is VW's input data file.
    with pytest.raises(VWArgsError, match=r"'data\.txt'"):
        validate_user_args("--sort_features data.txt")


def test_switch_given_a_value_is_refused() -> None:
    with pytest.raises(VWArgsError, match="--noconstant"):
        validate_user_args("--noconstant=1")


@pytest.mark.parametrize("args", ["-b=18", "-q=ab", "-l=0.5"])
def test_short_flag_with_equals_is_refused_because_vw_misreads_it(args: str) -> None:
    with pytest.raises(VWArgsError, match=args.split("=", maxsplit=1)[0]):
        validate_user_args(args)
    with pytest.raises(RuntimeError):
        _opens_in_vw(args)


def test_typical_combination_is_allowed_in_order() -> None:
    args = "--interactions :: -b 18 --cb_type=mtr -l 0.1 --l2 1e-7 -q UA --ignore_linear U"
    assert validate_user_args(args) == [
        "--interactions",
        "::",
        "-b",
        "18",
        "--cb_type=mtr",
        "-l",
        "0.1",
        "--l2",
        "1e-7",
        "-q",
        "UA",
        "--ignore_linear",
        "U",
    ]
    _opens_in_vw(args)


def test_empty_args_are_allowed() -> None:
    assert validate_user_args("") == []
    assert validate_user_args("   ") == []


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ("-d data.txt", "-d"),
        ("--data data.txt", "--data"),
        ("--dsjson", "--dsjson"),
        ("--json", "--json"),
        ("-f out.vw", "-f"),
        ("--final_regressor=out.vw", "--final_regressor"),
        ("-i in.vw", "-i"),
        ("--readable_model m.txt", "--readable_model"),
        ("-p preds.txt", "-p"),
        ("--cache_file c", "--cache_file"),
        ("--cb_explore_adf", "--cb_explore_adf"),
        ("--cb_adf", "--cb_adf"),
        ("-b 18 --daemon", "--daemon"),
        ("--save_resume", "--save_resume"),
        ("stray.txt", "stray.txt"),
    ],
)
def test_refused_flag_is_named(args: str, named: str) -> None:
    with pytest.raises(VWArgsError, match=f"'{re.escape(named)}(=[^']*)?' is not allowed"):
        validate_user_args(args)


@pytest.mark.parametrize(
    "args",
    [
        "--epsilon 0.1",
        "--bag 5",
        "--cover=3",
        "--softmax",
        "--squarecb",
        "--lambda 2",
        "--gamma_scale 3",
        "--first 2",
        "--regcb",
        "--large_action_space",
    ],
)
def test_exploration_flags_are_refused_with_a_pointer_to_the_exploration_section(
    args: str,
) -> None:
    flag = re.split(r"[ =]", args, maxsplit=1)[0]
    with pytest.raises(VWArgsError, match=f"{flag} is set through the experiment's 'exploration'"):
        validate_user_args(args)


def test_value_flag_without_a_value_is_refused() -> None:
    with pytest.raises(VWArgsError, match="-b needs a value"):
        validate_user_args("--interactions :: -b")


def test_value_of_a_flag_may_not_smuggle_a_second_token() -> None:
    # "-l 0.1 -d x": -l consumes 0.1, -d is then checked on its own.
    with pytest.raises(VWArgsError, match="'-d'"):
        validate_user_args("-l 0.1 -d x")


def test_unbalanced_quotes_are_refused() -> None:
    with pytest.raises(VWArgsError, match="cannot parse"):
        validate_user_args('--ignore "x')


def test_unknown_exploration_type_is_refused() -> None:
    with pytest.raises(VWArgsError, match="'thompson'"):
        exploration_args("thompson", epsilon=0.1, num_policies=2, lambda_=1.0, gamma_scale=1.0)


def test_exploration_numbers_are_written_so_vw_reads_them_back() -> None:
    args = exploration_args("egreedy", epsilon=1e-5, num_policies=2, lambda_=1.0, gamma_scale=1.0)
    assert args == ["--epsilon", "1e-05"]
    _opens_in_vw(" ".join(args))


def test_every_whitelisted_flag_is_tried_in_vw_by_these_tests() -> None:
    # A flag added to the whitelist must be added above, so VW gets to check it.
    assert set(FLAG_VALUES) == vwargs._WITH_VALUE
    assert set(SWITCHES) == vwargs._FLAGS
