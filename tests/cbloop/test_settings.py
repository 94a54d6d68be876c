"""Settings: config.yaml, CBLOOP_<SECTION>__<KEY> overrides, validation messages, VW arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import vowpalwabbit
import yaml

from cbloop.settings import (
    ExperimentSettings,
    SettingsError,
    load_settings,
    parse_duration,
)

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
EXPLORATION_TYPES = ["egreedy", "bag", "cover", "softmax", "squarecb"]


def _config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _error(tmp_path: Path, data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(_config(tmp_path, data), env=env or {})
    return str(info.value)


# ------------------------------------------------------------------------------- loading


def test_defaults_load_without_any_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.yaml here
    settings = load_settings(env={})
    assert settings.service.port == 8000
    assert settings.storage.backend == "local"
    assert settings.eventlog.fsync == "interval"
    assert settings.experiment("default").exploration.type == "squarecb"


def test_repository_config_yaml_is_valid_and_matches_defaults() -> None:
    settings = load_settings(REPO_CONFIG, env={})
    assert settings.service.port == 8000
    assert settings.experiment("default").vw_args == "--interactions :A -b 18"
    assert settings.experiment("default").reward.aggregation == "earliest"


def test_config_yaml_values_are_used(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        {
            "storage": {"root": str(tmp_path / "spool")},
            "service": {"port": 9001, "api_keys": ["k1", "k2"]},
            "eventlog": {"fsync": "always", "segment_max_seconds": 5},
            "experiments": {"news": {"reward": {"wait_seconds": 30, "aggregation": "sum"}}},
        },
    )
    settings = load_settings(path, env={})
    assert settings.storage.root == tmp_path / "spool"
    assert settings.service.port == 9001
    assert settings.service.api_keys == ["k1", "k2"]
    assert settings.eventlog.fsync == "always"
    assert settings.eventlog.segment_max_seconds == 5.0
    news = settings.experiment("news")
    assert news.reward.wait_seconds == 30.0
    assert news.reward.aggregation == "sum"
    assert news.reward.backward_seconds == 60.0  # unset keys keep their defaults


def test_empty_config_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("", encoding="utf-8")
    assert load_settings(path, env={}).service.port == 8000


def test_default_experiment_is_always_present(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, {"experiments": {"news": {}}}), env={})
    assert set(settings.experiments) == {"default", "news"}
    assert settings.experiment("default") == ExperimentSettings()


def test_unknown_experiment_lookup_names_it(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, {}), env={})
    with pytest.raises(SettingsError, match="'nope'"):
        settings.experiment("nope")


def test_missing_config_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(SettingsError, match=r"absent\.yaml"):
        load_settings(missing, env={})


def test_config_named_by_cbloop_config_env_is_used(tmp_path: Path) -> None:
    path = _config(tmp_path, {"service": {"port": 8123}})
    assert load_settings(env={"CBLOOP_CONFIG": str(path)}).service.port == 8123


def test_missing_file_named_by_cbloop_config_env_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"absent\.yaml"):
        load_settings(env={"CBLOOP_CONFIG": str(tmp_path / "absent.yaml")})


def test_config_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings(path, env={})


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("service: {port: [\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(path, env={})


# ---------------------------------------------------------------------- env overrides


def test_env_overrides_service_port_over_the_file(tmp_path: Path) -> None:
    path = _config(tmp_path, {"service": {"port": 9001}})
    settings = load_settings(path, env={"CBLOOP_SERVICE__PORT": "8100"})
    assert settings.service.port == 8100


def test_env_overrides_storage_root(tmp_path: Path) -> None:
    settings = load_settings(
        _config(tmp_path, {}), env={"CBLOOP_STORAGE__ROOT": str(tmp_path / "elsewhere")}
    )
    assert settings.storage.root == tmp_path / "elsewhere"


def test_env_overrides_a_nested_experiment_key_and_keeps_its_siblings(tmp_path: Path) -> None:
    path = _config(
        tmp_path, {"experiments": {"default": {"reward": {"wait_seconds": 600, "default": -1.0}}}}
    )
    env = {"CBLOOP_EXPERIMENTS__DEFAULT__REWARD__WAIT_SECONDS": "5"}
    reward = load_settings(path, env=env).experiment("default").reward
    assert reward.wait_seconds == 5.0
    assert reward.default == -1.0


def test_env_override_of_vw_args_keeps_the_string_as_written(tmp_path: Path) -> None:
    # ":: " would be a YAML mapping if the value were parsed as YAML.
    env = {"CBLOOP_EXPERIMENTS__DEFAULT__VW_ARGS": "--interactions :: -b 20"}
    settings = load_settings(_config(tmp_path, {}), env=env)
    assert settings.experiment("default").vw_args == "--interactions :: -b 20"


def test_env_overrides_accept_lists_bools_and_null(tmp_path: Path) -> None:
    env = {
        "CBLOOP_SERVICE__API_KEYS": "[alpha, beta]",
        "CBLOOP_EXPERIMENTS__DEFAULT__PROMOTION__USE_LOWER_BOUND": "true",
        "CBLOOP_EXPERIMENTS__DEFAULT__REWARD__DEFAULT": "null",
        "CBLOOP_S3_IGNORED": "x",  # no "__": not an override
    }
    settings = load_settings(_config(tmp_path, {}), env=env)
    assert settings.service.api_keys == ["alpha", "beta"]
    assert settings.experiment("default").promotion.use_lower_bound is True
    assert settings.experiment("default").reward.default is None


def test_env_override_of_a_string_key_keeps_digits_as_a_string(tmp_path: Path) -> None:
    env = {"CBLOOP_STORAGE__S3__PREFIX": "2024", "CBLOOP_SERVICE__HOST": "0.0.0.0"}
    settings = load_settings(_config(tmp_path, {}), env=env)
    assert settings.storage.s3.prefix == "2024"
    assert settings.service.host == "0.0.0.0"


def test_invalid_env_value_names_the_key_and_the_value(tmp_path: Path) -> None:
    message = _error(tmp_path, {}, env={"CBLOOP_SERVICE__PORT": "abc"})
    assert "service.port" in message
    assert "'abc'" in message


# ------------------------------------------------------------------------- validation


def test_port_out_of_range_names_the_key(tmp_path: Path) -> None:
    assert "service.port" in _error(tmp_path, {"service": {"port": 70000}})


def test_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    message = _error(tmp_path, {"service": {"prot": 8000}})
    assert "service.prot" in message


def test_unknown_section_from_env_is_refused_by_name(tmp_path: Path) -> None:
    message = _error(tmp_path, {}, env={"CBLOOP_SERVCE__PORT": "1"})
    assert "servce" in message


def test_bad_exploration_type_names_the_key(tmp_path: Path) -> None:
    message = _error(tmp_path, {"experiments": {"default": {"exploration": {"type": "thompson"}}}})
    assert "experiments.default.exploration.type" in message
    assert "thompson" in message


def test_bad_fsync_mode_names_the_key(tmp_path: Path) -> None:
    assert "eventlog.fsync" in _error(tmp_path, {"eventlog": {"fsync": "sometimes"}})


def test_s3_backend_without_bucket_is_refused(tmp_path: Path) -> None:
    assert "storage.s3.bucket" in _error(tmp_path, {"storage": {"backend": "s3"}})


def test_bad_experiment_name_is_refused(tmp_path: Path) -> None:
    assert "a/b" in _error(tmp_path, {"experiments": {"a/b": {}}})


def test_bad_pipeline_every_is_refused(tmp_path: Path) -> None:
    assert "pipeline.every" in _error(tmp_path, {"pipeline": {"every": "soon"}})


@pytest.mark.parametrize(
    ("vw_args", "named"),
    [
        ("-d train.dat", "-d"),
        ("--dsjson", "--dsjson"),
        ("-f model.vw", "-f"),
        ("-i model.vw", "-i"),
        ("--data=train.dat", "--data"),
        ("--epsilon 0.1", "--epsilon"),
        ("-b 18 --squarecb", "--squarecb"),
        ("--cb_explore_adf", "--cb_explore_adf"),
    ],
)
def test_vw_args_with_a_refused_flag_names_key_and_flag(
    tmp_path: Path, vw_args: str, named: str
) -> None:
    message = _error(tmp_path, {"experiments": {"default": {"vw_args": vw_args}}})
    assert "experiments.default.vw_args" in message
    assert named in message


def test_exploration_flag_in_vw_args_points_to_the_exploration_section(tmp_path: Path) -> None:
    message = _error(tmp_path, {"experiments": {"default": {"vw_args": "--epsilon 0.1"}}})
    assert "exploration" in message


# ------------------------------------------------------------------------ VW arguments


@pytest.mark.parametrize("kind", EXPLORATION_TYPES)
def test_vw_arguments_for_each_exploration_type_open_in_vw(kind: str) -> None:
    experiment = ExperimentSettings.model_validate(
        {"vw_args": "--interactions :: -b 18 -l 0.5", "exploration": {"type": kind}}
    )
    args = experiment.vw_arguments()
    assert args.startswith("--cb_explore_adf ")
    for banned in ("--dsjson", "--quiet", "-i ", "-f "):
        assert banned not in args
    ws = vowpalwabbit.Workspace(args + " --dsjson --quiet")
    try:
        pmf = ws.predict('{"a":[1],"c":{"u":{"x":1},"_multi":[{"A":{"id":"a"}},{"A":{"id":"b"}}]}}')
        assert len(pmf) == 2
        assert sum(pmf) == pytest.approx(1.0, abs=1e-5)
    finally:
        ws.finish()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("egreedy", "--epsilon 0.2"),
        ("bag", "--bag 3 --epsilon 0.2"),
        ("cover", "--cover 3 --epsilon 0.2"),
        ("softmax", "--softmax --lambda 4.0"),
        ("squarecb", "--squarecb --gamma_scale 7.0"),
    ],
)
def test_vw_arguments_carry_the_exploration_parameters(kind: str, expected: str) -> None:
    experiment = ExperimentSettings.model_validate(
        {
            "vw_args": "-b 16",
            "exploration": {
                "type": kind,
                "epsilon": 0.2,
                "num_policies": 3,
                "lambda_": 4.0,
                "gamma_scale": 7.0,
            },
        }
    )
    assert experiment.vw_arguments() == f"--cb_explore_adf -b 16 {expected}"


def test_egreedy_epsilon_is_what_vw_explores_with() -> None:
    experiment = ExperimentSettings.model_validate(
        {"vw_args": "", "exploration": {"type": "egreedy", "epsilon": 0.3}}
    )
    c = '"c":{"_multi":[' + ",".join('{"A":{"id":"%s"}}' % i for i in "abc") + "]}"  # noqa: UP031
    ws = vowpalwabbit.Workspace(experiment.vw_arguments() + " --dsjson --quiet")
    try:
        labelled = '{"_label_cost":-1,"_label_probability":0.5,"_label_Action":2,"_labelIndex":1,'
        ws.learn(labelled + '"a":[2,1,3],"p":[0.5,0.25,0.25],' + c + "}")
        pmf = ws.predict('{"a":[1],' + c + "}")
    finally:
        ws.finish()
    # Once action b scores best, egreedy gives it 1 - eps + eps/3 and the others eps/3.
    assert pmf[1] == pytest.approx(1 - 0.3 + 0.1, abs=1e-5)
    assert pmf[0] == pytest.approx(0.1, abs=1e-5)
    assert pmf[2] == pytest.approx(0.1, abs=1e-5)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("90s", 90), ("5m", 300), ("1h", 3600), ("2d", 172800), ("7", 7)],
)
def test_parse_duration_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "0s", "-5m"])
def test_parse_duration_refuses_nonsense_and_non_positive(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
