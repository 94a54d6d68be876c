"""Personalizer features -> cbloop namespaces, so a Personalizer call is a native rank request.

Personalizer takes `contextFeatures` (and each action's `features`) as a list of JSON objects
whose values may nest objects and arrays; cbloop's encoder takes `{namespace: {feature:
scalar}}`. The mapping, total and injective on what it accepts:

* Each element of the list is an object; its keys are merged in list order.
* A top-level key whose value is an object is a **namespace** of that name. Everything
  inside it becomes features of that namespace, named by their path below it: nested
  object keys joined with `.`, array elements by their 0-based position in `[i]`
  (`{"user": {"loc": {"city": "paris"}, "tags": ["a", "b"]}}` gives namespace `user` with
  `loc.city = "paris"`, `tags[0] = "a"`, `tags[1] = "b"`).
* A top-level key whose value is a scalar is a feature of the namespace `default`; a
  top-level array is flattened the same way into `default` (`{"n": [1, 2]}`: `n[0]`, `n[1]`).
* Strings stay categorical, numbers and booleans numeric: the encoder then writes them as
  for a native request (string `k: v` is VW's feature `k=v`).
* `null` means the feature is absent (VW's JSON parser skipped nulls too).
* Refused (400, naming the path): a list element that is not an object, the same feature
  twice (two list elements giving one namespace the same feature), a key starting with `_`
  (VW gives those special meaning), the namespace `ActionId` (cbloop's action-id namespace).
  The native checks (names, value bounds, feature counts) then apply as for `/v1/rank`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cbloop.errors import InvalidInput

#: Namespace of the top-level scalar features of a Personalizer feature list.
DEFAULT_NAMESPACE = "default"

Scalar = str | int | float | bool
Namespaces = dict[str, dict[str, Scalar]]


class FeatureMappingError(InvalidInput):
    """A Personalizer feature list that has no cbloop form; `field` is its JSON path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def to_namespaces(
    items: Sequence[Any] | None, where: str, *, drop_reserved: bool = False
) -> Namespaces:
    """The namespaces of one Personalizer feature list (`where` names it in errors).

    `drop_reserved` skips top-level keys starting with `_` instead of refusing them: in
    logged DSJSON those are VW's own metadata (`_tag`, `_multi`), not features.
    """
    out: Namespaces = {}
    for i, item in enumerate(items or ()):
        path = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise FeatureMappingError(path, "each element must be a JSON object")
        for key, value in item.items():
            if drop_reserved and key.startswith("_"):
                continue
            _check_key(key, f"{path}.{key}")
            if isinstance(value, Mapping):
                namespace = out.setdefault(key, {})
                for name, scalar in _flatten(value, "", f"{path}.{key}"):
                    _put(namespace, name, scalar, f"{path}.{key}")
            else:
                namespace = out.setdefault(DEFAULT_NAMESPACE, {})
                for name, scalar in _flatten_value(value, key, f"{path}.{key}"):
                    _put(namespace, name, scalar, f"{path}.{key}")
    return {ns: features for ns, features in out.items() if features}


def _check_key(key: str, path: str) -> None:
    if key.startswith("_"):
        raise FeatureMappingError(path, "names starting with '_' are reserved by VW's parser")


def _put(namespace: dict[str, Scalar], name: str, value: Scalar, path: str) -> None:
    if name in namespace:
        raise FeatureMappingError(path, f"feature {name!r} is given twice")
    namespace[name] = value


def _flatten(obj: Mapping[str, Any], prefix: str, path: str) -> list[tuple[str, Scalar]]:
    found: list[tuple[str, Scalar]] = []
    for key, value in obj.items():
        _check_key(key, f"{path}.{key}")
        found += _flatten_value(value, f"{prefix}.{key}" if prefix else key, f"{path}.{key}")
    return found


def _flatten_value(value: Any, name: str, path: str) -> list[tuple[str, Scalar]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return _flatten(value, name, path)
    if isinstance(value, list):
        found: list[tuple[str, Scalar]] = []
        for i, element in enumerate(value):
            found += _flatten_value(element, f"{name}[{i}]", f"{path}[{i}]")
        return found
    # Scalars pass as they are; the native schema checks their type and bounds.
    return [(name, value)]
