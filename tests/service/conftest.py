"""Fixtures for the HTTP service: real app lifespan, real VW, real segment files in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import ClientFactory, app_settings, logged

from cbloop.settings import Settings
from cbloop_service.app import create_app


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[ClientFactory]:
    """make_client(**settings overrides) -> a TestClient whose app lifespan is running."""
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


@pytest.fixture
def read_log(client: TestClient) -> Callable[[str], list[dict[str, Any]]]:
    root = app_settings(client).storage.root
    return lambda kind: logged(root, kind)
