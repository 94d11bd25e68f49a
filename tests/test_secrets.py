"""Secrets: configured ones win; otherwise generated once, stored, and the same afterwards."""

from __future__ import annotations

from dataclasses import replace

from server.secrets import load_secrets
from server.store import open_store


async def test_secrets_are_generated_once(settings):
    bare = replace(settings, callback_secrets=(), api_token="")
    async with open_store(bare) as store:
        first = await load_secrets(store, bare)
    async with open_store(bare) as store:
        second = await load_secrets(store, bare)
    assert set(first.generated) == {"API_TOKEN", "CALLBACK_SECRETS"}
    assert second.generated == ()
    assert (second.api_token, second.callback_secrets) == (first.api_token, first.callback_secrets)
    assert len(first.api_token) >= 40 and first.api_token != first.callback_secrets[0]
    assert first.api_token not in repr(first) and first.callback_secrets[0] not in repr(first)


async def test_configured_secrets_are_used_and_nothing_is_generated(settings):
    async with open_store(settings) as store:
        got = await load_secrets(store, settings)
        assert got.generated == ()
        assert got.api_token == settings.api_token
        assert got.callback_secrets == settings.callback_secrets
        assert await store.get_secret("api_token") is None
