"""API keys for the classify API tests: an admin and two subscribers."""

from __future__ import annotations

from wirewatch import state
from wirewatch.auth import KeyStore
from wirewatch.settings import Settings


def keys(settings: Settings) -> tuple[str, str, str]:
    store = KeyStore(state.connect(settings), settings)
    _, admin = store.create("ops", "admin")
    _, alice = store.create("alice desk", "subscriber")
    _, bob = store.create("bob desk", "subscriber")
    return admin, alice, bob
