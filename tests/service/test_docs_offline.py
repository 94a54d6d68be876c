"""/docs and /redoc need nothing outside the service; the OpenAPI explains every field."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_service_itself(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", html.text)
    assets = [u for u in urls if not u.endswith("openapi.json")]
    assert assets, html.text
    for url in urls:
        assert not re.match(r"^(https?:)?//", url), f"{page} loads {url} from elsewhere"
    for url in assets:
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 1000, url
    assert client.get("/openapi.json").status_code == 200


def _properties(schema: dict[str, Any], name: str) -> dict[str, Any]:
    props: dict[str, Any] = schema["components"]["schemas"][name]["properties"]
    return props


@pytest.mark.parametrize(
    "model",
    ["RankRequest", "Action", "RankResponse", "RankedAction", "RewardRequest", "OutcomeAccepted"],
)
def test_every_rank_and_reward_field_has_a_description_and_an_example(
    client: TestClient, model: str
) -> None:
    for field, spec in _properties(client.get("/openapi.json").json(), model).items():
        assert spec.get("description"), f"{model}.{field} has no description"
        assert spec.get("examples"), f"{model}.{field} has no example"


def test_openapi_says_the_ranking_starts_with_the_chosen_action(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    ranking = _properties(schema, "RankResponse")["ranking"]["description"]
    assert "chosen action first" in ranking
    assert "excluded" in ranking
    reward = _properties(schema, "RewardRequest")["value"]["description"]
    assert "reward.min" in reward
