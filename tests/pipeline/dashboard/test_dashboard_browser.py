"""The dashboard of a seeded simulation, driven in a real headless chromium.

Every page loads without console errors or failed requests, every chart draws each point of
the JSON behind it, and the numbers on the page are the warehouse's, recomputed here with
plain SQL on the warehouse file itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import httpx
import pytest
from dashboard_helpers import LiveServer, Simulated

from cbloop.registry import ModelRegistry
from cbloop.storage import open_store

# The first test of a session also runs the seeded simulation (about a minute or two).
pytestmark = pytest.mark.timeout(600)

#: Charts a simulation with several rounds must fill (the lift needs a holdout).
FILLED = (
    "traffic",
    "reward_over_time",
    "reward_by_model",
    "offline_online",
    "exploration",
    "ess",
    "max_weight",
    "delay",
)


class Watched:
    """A page with every console error, page error, failed or 4xx/5xx request recorded."""

    def _add(self, problem: str) -> None:
        self.problems.append(problem)

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: self._add(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        page.on(
            "response",
            lambda r: self._add(f"{r.status}: {r.url}") if r.status >= 400 else None,
        )

    def open(self, url: str) -> None:
        response = self.page.goto(url)
        assert response is not None and response.status == 200, url
        self.page.wait_for_selector("html[data-ready='1']")


@pytest.fixture
def page(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(
        viewport={"width": 1300, "height": 900}, timezone_id="Asia/Tokyo", locale="en-US"
    )
    yield Watched(context.new_page())
    context.close()


def _warehouse(simulated: Simulated) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(simulated.settings.warehouse.path), read_only=True)


def _model_ids(simulated: Simulated) -> list[str]:
    with _warehouse(simulated) as con:
        rows = con.execute("SELECT model_id FROM models ORDER BY created_at").fetchall()
    return [str(r[0]) for r in rows]


def test_every_page_loads_clean_and_every_chart_draws_every_point(
    browser: Any, page: Watched, dashboard: LiveServer, simulated: Simulated
) -> None:
    paths = ["/", "/experiments/default"] + [
        f"/experiments/default/models/{m}" for m in _model_ids(simulated)
    ]
    assert len(paths) >= 5  # warm start + one model per round
    seen: dict[str, int] = {}
    for path in paths:
        page.open(dashboard.url + path)
        for fig in page.page.query_selector_all("figure.chart"):
            chart = fig.get_attribute("data-chart")
            spec = httpx.get(dashboard.url + str(fig.get_attribute("data-api"))).json()
            expected = sum(len(s["points"]) for s in spec["series"])
            drawn = len(fig.query_selector_all("svg .pt"))
            assert drawn == expected, (path, chart)
            assert fig.get_attribute("data-drawn") == str(expected), (path, chart)
            seen[str(chart)] = max(seen.get(str(chart), 0), drawn)
    assert page.problems == []
    with _warehouse(simulated) as con:
        judged = con.execute(
            "SELECT count(*) FROM deployment_decisions p WHERE promoted AND eval_id IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM decisions d WHERE d.model_id = p.model_id)"
        ).fetchone()
        served = con.execute("SELECT count(DISTINCT model_id) FROM decisions").fetchone()
    assert judged is not None and served is not None
    for chart in FILLED:
        if chart == "offline_online" and judged[0] == 0:
            continue  # no model an evaluation promoted has served yet
        assert seen[chart] > 0, chart
    assert seen["reward_by_model"] == served[0]


def test_numbers_on_the_pages_equal_the_warehouse(
    browser: Any, page: Watched, dashboard: LiveServer, simulated: Simulated
) -> None:
    with _warehouse(simulated) as con:
        decisions = con.execute(
            "SELECT count(DISTINCT event_id) FROM decisions WHERE experiment = 'default'"
        ).fetchone()
        reward = con.execute(
            "SELECT avg(reward) FROM joined_events WHERE experiment = 'default' "
            "AND reward IS NOT NULL"
        ).fetchone()
        per_model = dict(
            con.execute(
                "SELECT model_id, count(DISTINCT event_id) FROM decisions "
                "WHERE experiment = 'default' GROUP BY model_id"
            ).fetchall()
        )
        late = con.execute(
            "SELECT count(*) FROM unused_rewards WHERE experiment = 'default' "
            "AND reason IN ('after_window', 'after_join')"
        ).fetchone()
        trained = dict(con.execute("SELECT model_id, events_trained FROM models").fetchall())
    assert decisions is not None and reward is not None and late is not None
    assert decisions[0] == simulated.loops * simulated.per_loop
    current = ModelRegistry(open_store(simulated.settings.storage)).current("default")
    assert current is not None

    page.open(dashboard.url + "/")
    row = page.page.locator("tr[data-experiment='default']")
    assert row.locator("[data-field=decisions_day]").inner_text() == f"{decisions[0]:,}"
    assert row.locator("[data-field=reward_day] .num").inner_text() == f"{reward[0]:.3f}"
    assert row.locator("[data-field=serving_model]").inner_text() == current.model_id
    assert row.locator("[data-field=outcome]").inner_text() == "done"

    page.open(dashboard.url + "/experiments/default")
    shown = {
        r.get_attribute("data-model"): r.locator("[data-field=decisions]").inner_text()
        for r in page.page.locator("#by-model tbody tr").all()
    }
    assert shown == {m: f"{n:,}" for m, n in per_model.items()}
    assert page.page.locator("#unused [data-field=late]").inner_text() == str(late[0])
    assert "no holdout configured" in page.page.locator("#holdout").inner_text()

    model = current.model_id
    page.open(dashboard.url + f"/experiments/default/models/{model}")
    assert page.page.locator("[data-field=events_trained]").inner_text() == f"{trained[model]:,}"
    assert page.page.locator("[data-field=state]").inner_text() == "deployed"
    assert page.problems == []


def test_hovering_a_point_shows_its_value(
    browser: Any, page: Watched, dashboard: LiveServer, simulated: Simulated
) -> None:
    page.open(dashboard.url + "/experiments/default")
    spec = httpx.get(dashboard.url + "/api/experiments/default/charts/reward_by_model").json()
    first = spec["series"][0]["points"][0]
    fig = page.page.locator("#chart-reward_by_model")
    tooltip = fig.locator(".tooltip")
    assert tooltip.is_hidden()
    fig.locator("svg .pt").first.hover()
    assert tooltip.is_visible()
    text = tooltip.inner_text()
    assert f"{first['y']:.3f}" in text and f"[{first['low']:.3f}, {first['high']:.3f}]" in text
    page.page.mouse.move(0, 0)
    assert tooltip.is_hidden()


def test_times_are_shown_in_the_viewers_time_zone(
    browser: Any, page: Watched, dashboard: LiveServer, simulated: Simulated
) -> None:
    page.open(dashboard.url + "/")
    stamp = page.page.locator("header time")
    iso = str(stamp.get_attribute("datetime"))
    local = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo("Asia/Tokyo"))
    hour = local.hour % 12 or 12
    assert f"{hour}:{local.minute:02d}:{local.second:02d}" in stamp.inner_text()
    assert "Asia/Tokyo" in page.page.locator("footer .tz").inner_text()


def test_without_javascript_every_chart_is_a_table(
    browser: Any, dashboard: LiveServer, simulated: Simulated
) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        tab = context.new_page()
        tab.goto(dashboard.url + "/experiments/default")
        figures = tab.query_selector_all("figure.chart")
        assert len(figures) >= len(FILLED)
        for fig in figures:
            assert fig.query_selector("svg") is None
            rows = fig.query_selector_all("details table tbody tr")
            assert len(rows) == int(str(fig.get_attribute("data-points")))
    finally:
        context.close()


def test_the_static_snapshot_of_the_run_opens_from_disk(
    browser: Any, page: Watched, simulated: Simulated
) -> None:
    index = simulated.static_dir / "index.html"
    page.open(index.as_uri())
    page.page.locator("tr[data-experiment='default'] a").first.click()
    page.page.wait_for_selector("html[data-ready='1']")
    assert page.page.url.endswith("/experiments/default.html")
    drawn = [
        int(str(f.get_attribute("data-drawn")))
        for f in page.page.query_selector_all("figure.chart")
    ]
    assert len(drawn) >= len(FILLED) and sum(drawn) > 0
    assert page.problems == []
