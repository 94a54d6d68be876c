"""HTTP routes, one small module per area; they translate between HTTP and the domain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cbloop_service.personalizer import routes as personalizer
from cbloop_service.routes import admin_experiments, events, health, models, rank

if TYPE_CHECKING:
    from cbloop_service.app import ServiceApp


def include_routes(app: ServiceApp) -> None:
    app.add_short_route(rank.route())
    for module in (events, models, admin_experiments, health):
        app.include_router(module.router)
    personalizer.install(app)


def manual_openapi() -> tuple[dict[str, Any], dict[str, Any]]:
    """OpenAPI (paths, schemas) of the routes FastAPI cannot describe itself."""
    return rank.openapi_paths()
