"""API keys: client keys guard rank/reward/activate, admin keys guard the admin routes."""

from __future__ import annotations

import hmac

from cbloop.settings import ServiceSettings
from cbloop_service.errors import NotAuthenticated, NotAuthorized


class KeyRing:
    """Keys compared in constant time, so response timing does not leak a key."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    def __contains__(self, candidate: object) -> bool:
        if not isinstance(candidate, str):
            return False
        raw = candidate.encode()
        found = False
        for key in self._keys:  # no early exit: every key is compared
            found |= hmac.compare_digest(raw, key)
        return found


class Authenticator:
    """No keys configured means open routes (the local default).

    With `api_keys` set, client routes need one of them or an admin key. With
    `admin_api_keys` set, admin routes need an admin key (a client key gets 403); without
    them, admin routes follow the client rule.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self._client = (
            KeyRing([*settings.api_keys, *settings.admin_api_keys]) if settings.api_keys else None
        )
        self._admin = KeyRing(settings.admin_api_keys) if settings.admin_api_keys else None

    @property
    def client_key_required(self) -> bool:
        """False lets callers skip even reading the key headers."""
        return self._client is not None

    def check_client(self, key: str | None) -> None:
        if self._client is not None and key not in self._client:
            raise NotAuthenticated()

    def check_admin(self, key: str | None) -> None:
        if self._admin is None:
            self.check_client(key)
            return
        if key in self._admin:
            return
        if self._client is not None and key in self._client:
            raise NotAuthorized()
        raise NotAuthenticated()
