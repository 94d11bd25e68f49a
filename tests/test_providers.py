"""The provider registry: one module per family, one line each, read by everything else."""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path

import httpx
import pytest

from server.core.merge import merge
from server.core.types import Status, TaskState
from server.observe import metrics
from server.providers import NAMES, PROVIDERS, UnknownProvider, build_clients, get, token_settings
from server.providers.acedata import AceDataClient
from server.providers.parse import MAX_UNKNOWN_WORDS, notice_unknown_word, parse_payload
from server.providers.seedance2 import Seedance2Client
from server.settings import Settings

from .conftest import callback_path

SERVER = Path(__file__).resolve().parent.parent / "server"


def test_registry_lists_every_provider_once_in_order() -> None:
    assert NAMES == ("seedream", "seedance", "dreamina", "seedance2")
    assert list(PROVIDERS) == list(NAMES)
    assert all(get(name) is PROVIDERS[name] and get(name).name == name for name in NAMES)


def test_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(UnknownProvider, match="'midjourney'.*seedream, seedance"):
        get("midjourney")


@pytest.mark.parametrize(
    ("name", "family", "poll", "kind", "tokens"),
    [
        ("seedream", "acedata", "batch", "image", ("ACEDATA_API_TOKEN",)),
        ("seedance", "acedata", "batch", "video", ("ACEDATA_API_TOKEN",)),
        ("dreamina", "acedata", "batch", "video", ("ACEDATA_API_TOKEN",)),
        ("seedance2", "seedance2", "single", "video", ("SEEDANCE2_API_KEY",)),
    ],
)
def test_each_provider_declares_family_poll_style_result_kind_and_token(
    name: str, family: str, poll: str, kind: str, tokens: tuple[str, ...]
) -> None:
    provider = get(name)
    assert (provider.family, provider.poll, provider.result_kind) == (family, poll, kind)
    assert provider.token_settings == tokens
    assert all(t.lower() in Settings.__dataclass_fields__ for t in tokens)


def test_token_settings_are_listed_once_per_setting() -> None:
    assert token_settings() == ["ACEDATA_API_TOKEN", "SEEDANCE2_API_KEY"]
    assert token_settings(["seedance", "dreamina"]) == ["ACEDATA_API_TOKEN"]


def test_configured_follows_the_token_settings() -> None:
    ace_only = Settings(acedata_api_token="t")
    assert [p for p in NAMES if get(p).configured(ace_only)] == ["seedream", "seedance", "dreamina"]
    assert [p for p in NAMES if get(p).configured(Settings(seedance2_api_key="k"))] == ["seedance2"]


async def test_build_clients_asks_each_provider_for_its_client() -> None:
    async with httpx.AsyncClient() as http:
        assert build_clients(Settings(), http) == {}
        clients = build_clients(Settings(acedata_api_token="t", seedance2_api_key="k"), http)
    assert list(clients) == list(NAMES)
    assert all(isinstance(clients[p], AceDataClient) for p in ("seedream", "seedance", "dreamina"))
    assert isinstance(clients["seedance2"], Seedance2Client)
    assert all(client.provider == name for name, client in clients.items())


def test_no_module_outside_providers_names_a_provider_or_its_token() -> None:
    """Adding a provider is its module plus a registry line: nothing else spells names."""
    pattern = re.compile(
        r"""["'](seedream|seedance|dreamina|seedance2)["']|ACEDATA_API_TOKEN|SEEDANCE2_API_KEY"""
    )
    offenders = []
    for path in SERVER.rglob("*"):
        if path.suffix not in (".py", ".html") or "providers" in path.relative_to(SERVER).parts:
            continue
        if path.name == "settings.py":  # the settings table declares every variable
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(SERVER)}:{number}: {line.strip()}")
    assert offenders == []


# -- status words nobody told us about -------------------------------------------------------


def unknown_word() -> tuple[str, str]:
    """A word no provider uses, fresh per test (the parser remembers the words it logged)."""
    tag = uuid.uuid4().hex[:8]
    return f"Mystery-{tag}", f"mystery_{tag}"


def counted(provider: str, label: str) -> float:
    name = "taskhook_unknown_status_words_total"
    return metrics.REGISTRY.get_sample_value(name, {"provider": provider, "word": label}) or 0.0


def test_an_unknown_status_word_changes_nothing_and_is_logged_once_and_counted(caplog) -> None:
    word, label = unknown_word()
    body = {"success": True, "task_id": "t-1", "data": {"task_id": "cgt-1", "status": word}}
    running = merge(
        TaskState("t-1", "seedance"),
        parse_payload("seedance", {**body, "data": {"status": "running"}}),
    )
    with caplog.at_level(logging.WARNING, logger="taskhook.providers"):
        observations = [parse_payload("seedance", body) for _ in range(3)]
        parse_payload("dreamina", body)
    assert all(o.status is None and o.upstream_status == word for o in observations)
    assert merge(running, observations[0]).status is Status.RUNNING  # left unchanged
    logged = [r for r in caplog.records if getattr(r, "event", None) == "unknown_status_word"]
    assert [(r.provider, r.word) for r in logged] == [("seedance", label), ("dreamina", label)]
    assert counted("seedance", label) == 3
    assert counted("dreamina", label) == 1


def test_unknown_words_are_labelled_only_up_to_a_bound() -> None:
    """A sender inventing words cannot grow /metrics without bound."""
    provider = "seedream"  # SeeDream has no status words, so none of these is known
    for _ in range(MAX_UNKNOWN_WORDS + 5):
        notice_unknown_word(provider, unknown_word()[0])
    labels = {
        s.labels["word"]
        for family in metrics.REGISTRY.collect()
        for s in family.samples
        if s.name == "taskhook_unknown_status_words_total" and s.labels["provider"] == provider
    }
    assert len(labels) == MAX_UNKNOWN_WORDS + 1
    assert "_other" in labels


async def test_unknown_words_of_callbacks_show_in_metrics(client) -> None:
    word, label = unknown_word()
    body = {"code": "success", "data": {"task_id": "asyntask_1", "status": word}}
    answer = await client.post(callback_path("seedance2"), content=json.dumps(body))
    assert answer.status_code == 200
    assert answer.json()["status"] == "pending"
    scraped = (await client.get("/metrics")).text
    assert f'taskhook_unknown_status_words_total{{provider="seedance2",word="{label}"}} 1.0' in (
        scraped
    )
