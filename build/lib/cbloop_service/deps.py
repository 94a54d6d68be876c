"""FastAPI dependencies: how routes reach the lifespan's resources and check API keys.

Each route takes exactly one of these, and each is a flat `async def`: FastAPI runs plain
`def` dependencies in a thread pool and resolves every nested dependency per request,
which together cost more than scoring and logging a decision. The security schemes are
documented in the OpenAPI schema by `service.app` instead of through `Security(...)`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from cbloop_service.errors import ServiceUnavailable
from cbloop_service.state import ServiceState

API_KEY_HEADER = "x-api-key"
_BEARER = "bearer "


def _service(conn: HTTPConnection) -> ServiceState:
    service: ServiceState | None = conn.app.state.service
    if service is None:
        raise ServiceUnavailable("the service is starting or stopping")
    return service


def presented_key(conn: HTTPConnection) -> str | None:
    """The key from `X-API-Key`, else from `Authorization: Bearer <key>`."""
    headers = conn.headers
    key = headers.get(API_KEY_HEADER)
    if key:
        return key
    auth = headers.get("authorization")
    if auth and auth[: len(_BEARER)].lower() == _BEARER:
        return auth[len(_BEARER) :].strip() or None
    return None


async def get_service(request: Request) -> ServiceState:
    return _service(request)


def authorized_client(conn: HTTPConnection) -> ServiceState:
    """The service, once the caller showed a client key (for routes outside FastAPI's DI)."""
    service = _service(conn)
    if service.auth.client_key_required:
        service.auth.check_client(presented_key(conn))
    return service


async def client_service(request: Request) -> ServiceState:
    return authorized_client(request)


async def admin_service(request: Request) -> ServiceState:
    service = _service(request)
    service.auth.check_admin(presented_key(request))
    return service


#: Open routes (health, readiness).
ServiceDep = Annotated[ServiceState, Depends(get_service)]
#: Client routes: rank, reward, activate.
ClientService = Annotated[ServiceState, Depends(client_service)]
#: Admin routes: model info, metrics.
AdminService = Annotated[ServiceState, Depends(admin_service)]

#: OpenAPI security schemes (declared by `service.app`) and the route-level note using them;
#: `{}` because keys are optional when none are configured.
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}
API_KEY_SECURITY: dict[str, Any] = {"security": [{"ApiKey": []}, {"Bearer": []}, {}]}
