"""Personalizer feature lists -> cbloop namespaces (the mapping the README documents)."""

from __future__ import annotations

import pytest

from cbloop.personalizer_features import FeatureMappingError, to_namespaces


def test_objects_are_namespaces_and_nesting_becomes_paths() -> None:
    features = [
        {"user": {"age": 31, "loc": {"city": "paris", "geo": [48.8, 2.3]}}},
        {"user": {"premium": True}, "device": {"apps": [{"name": "maps"}, {"name": "mail"}]}},
        {"hour": 21, "flags": [True, None, False]},
    ]
    assert to_namespaces(features, "contextFeatures") == {
        "user": {
            "age": 31,
            "loc.city": "paris",
            "loc.geo[0]": 48.8,
            "loc.geo[1]": 2.3,
            "premium": True,
        },
        "device": {"apps[0].name": "maps", "apps[1].name": "mail"},
        "default": {"hour": 21, "flags[0]": True, "flags[2]": False},
    }


def test_nulls_are_absent_features_and_empty_namespaces_vanish() -> None:
    assert to_namespaces([{"user": {"age": None}}, {"x": None}], "f") == {}
    assert to_namespaces(None, "f") == {}


@pytest.mark.parametrize(
    ("features", "field"),
    [
        ([1], "f[0]"),
        ([{"u": {"a": 1}}, {"u": {"a": 2}}], "f[1].u"),
        ([{"u": {"_hidden": 1}}], "f[0].u._hidden"),
        ([{"_multi": []}], "f[0]._multi"),
        ([{"x": 1}, {"default": {"x": 2}}], "f[1].default"),
    ],
)
def test_what_has_no_cbloop_form_is_refused_naming_its_path(
    features: list[object], field: str
) -> None:
    with pytest.raises(FeatureMappingError) as refused:
        to_namespaces(features, "f")
    assert refused.value.field == field


def test_logged_metadata_keys_can_be_dropped() -> None:
    entry = {"_tag": "a1", "item": {"kind": "x"}}
    assert to_namespaces([entry], "m", drop_reserved=True) == {"item": {"kind": "x"}}
