"""Offline-evaluation requests and their results in the store: one definition for both halves.

The service never writes the warehouse, so an evaluation asked for over HTTP (Personalizer's
evaluations routes) is a request object in the store; the learning loop (one writer) finds
the requests without a result, runs them and writes the result beside the request:

    personalizer/<kind>/<experiment>/<id>/request.json   (the service)
    personalizer/<kind>/<experiment>/<id>/result.json    (the pipeline)

`kind` is `evaluations` (policies compared) or `featureimportances` (the experiment's
namespaces scored; no policies).

`request.json`: id, name, startTime, endTime (ISO 8601, UTC), createdAt, and `policies`, each
`{name, arguments, vw_args, exploration}`: Personalizer's VW argument string as given and
the experiment-settings fragment it stands for. `result.json`: `status` (`succeeded` or
`failed`), `error`, `finishedAt`, and the figures (see pipeline.personalizer_evaluations).
An evaluation is pending while it has a request and no result; deleting removes both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from cbloop.clock import format_ts, parse_ts
from cbloop.errors import InvalidInput
from cbloop.settings import ExperimentSettings
from cbloop.storage import ObjectNotFound, ObjectStore

EVALUATIONS = "evaluations"
FEATURE_IMPORTANCES = "featureimportances"
KINDS = (EVALUATIONS, FEATURE_IMPORTANCES)
REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
#: Ids become store key parts: no slashes, no leading dot.
ID_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"
_ID = re.compile(ID_PATTERN)
SUCCEEDED = "succeeded"
FAILED = "failed"
PENDING = "pending"


class EvaluationRequestError(InvalidInput):
    """An evaluation request that cannot be run as it stands (names the problem)."""


@dataclass(frozen=True)
class PolicySpec:
    """One policy to evaluate: Personalizer's arguments and the cbloop settings they mean."""

    name: str
    arguments: str
    vw_args: str
    exploration: Mapping[str, Any]

    def settings(self, experiment: ExperimentSettings) -> ExperimentSettings:
        """`experiment` with this policy's learning flags and exploration, validated the way
        an experiment's own settings are (VW-argument whitelist, exploration bounds)."""
        data = experiment.model_dump()
        data["vw_args"] = self.vw_args
        data["exploration"] = dict(self.exploration)
        try:
            return ExperimentSettings.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise EvaluationRequestError(f"policy {self.name!r}: {problems}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arguments": self.arguments,
            "vw_args": self.vw_args,
            "exploration": dict(self.exploration),
        }


@dataclass(frozen=True)
class EvaluationRequest:
    id: str
    experiment: str
    name: str
    start: datetime
    end: datetime
    policies: tuple[PolicySpec, ...]
    created_at: str

    def __post_init__(self) -> None:
        check_id(self.id)
        if not self.end > self.start:
            raise EvaluationRequestError(
                f"endTime {format_ts(self.end)} must be after startTime {format_ts(self.start)}"
            )
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise EvaluationRequestError("policy names must be unique")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "experiment": self.experiment,
            "name": self.name,
            "startTime": format_ts(self.start),
            "endTime": format_ts(self.end),
            "createdAt": self.created_at,
            "policies": [p.to_dict() for p in self.policies],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationRequest:
        try:
            return cls(
                id=str(data["id"]),
                experiment=str(data["experiment"]),
                name=str(data["name"]),
                start=parse_ts(str(data["startTime"])),
                end=parse_ts(str(data["endTime"])),
                policies=tuple(
                    PolicySpec(
                        name=str(p["name"]),
                        arguments=str(p["arguments"]),
                        vw_args=str(p["vw_args"]),
                        exploration=dict(p["exploration"]),
                    )
                    for p in data["policies"]
                ),
                created_at=str(data["createdAt"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationRequestError(f"unreadable evaluation request: {exc!r}") from None


def check_id(evaluation_id: str) -> str:
    if not _ID.fullmatch(evaluation_id):
        raise EvaluationRequestError(
            f"evaluation id {evaluation_id[:60]!r}: use 1 to 128 of A-Z a-z 0-9 . _ - "
            "(not starting with a dot)"
        )
    return evaluation_id


def prefix(kind: str, experiment: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown request kind {kind!r}")
    return f"personalizer/{kind}/{experiment}/"


def folder(experiment: str, evaluation_id: str, kind: str = EVALUATIONS) -> str:
    return f"{prefix(kind, experiment)}{check_id(evaluation_id)}"


def _read_json(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        return None
    value = json.loads(data)
    if not isinstance(value, dict):
        raise EvaluationRequestError(f"{key} does not hold a JSON object")
    return value


def write_request(store: ObjectStore, request: EvaluationRequest, kind: str = EVALUATIONS) -> None:
    key = f"{folder(request.experiment, request.id, kind)}/{REQUEST_FILE}"
    store.put_bytes(key, json.dumps(request.to_dict(), indent=2).encode())


def read_request(
    store: ObjectStore, experiment: str, evaluation_id: str, kind: str = EVALUATIONS
) -> EvaluationRequest | None:
    data = _read_json(store, f"{folder(experiment, evaluation_id, kind)}/{REQUEST_FILE}")
    return None if data is None else EvaluationRequest.from_dict(data)


def write_result(
    store: ObjectStore,
    experiment: str,
    evaluation_id: str,
    result: Mapping[str, Any],
    kind: str = EVALUATIONS,
) -> None:
    key = f"{folder(experiment, evaluation_id, kind)}/{RESULT_FILE}"
    store.put_bytes(key, json.dumps(dict(result), indent=2, allow_nan=False).encode())


def read_result(
    store: ObjectStore, experiment: str, evaluation_id: str, kind: str = EVALUATIONS
) -> dict[str, Any] | None:
    return _read_json(store, f"{folder(experiment, evaluation_id, kind)}/{RESULT_FILE}")


def evaluation_ids(store: ObjectStore, experiment: str, kind: str = EVALUATIONS) -> list[str]:
    """Ids of the experiment's requests of `kind`, in id order."""
    base = prefix(kind, experiment)
    ids = {
        info.key[len(base) :].split("/", 1)[0]
        for info in store.list(base)
        if info.key.endswith(f"/{REQUEST_FILE}")
    }
    return sorted(ids)


def pending_requests(
    store: ObjectStore, experiment: str, kind: str = EVALUATIONS
) -> list[EvaluationRequest]:
    """Requests with no result yet, oldest first (by creation time, then id)."""
    out = []
    for evaluation_id in evaluation_ids(store, experiment, kind):
        if store.stat(f"{folder(experiment, evaluation_id, kind)}/{RESULT_FILE}") is not None:
            continue
        request = read_request(store, experiment, evaluation_id, kind)
        if request is not None:
            out.append(request)
    return sorted(out, key=lambda r: (r.created_at, r.id))


def delete_evaluation(
    store: ObjectStore, experiment: str, evaluation_id: str, kind: str = EVALUATIONS
) -> bool:
    """Remove the request and any result; False when there was neither."""
    base = folder(experiment, evaluation_id, kind)
    found = False
    # The request first: a result left alone is listed nowhere, whereas a request left alone
    # would be pending again and run once more.
    for name in (REQUEST_FILE, RESULT_FILE):
        key = f"{base}/{name}"
        if store.stat(key) is not None:
            store.delete(key)
            found = True
    return found
