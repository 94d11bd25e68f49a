from __future__ import annotations

import contextlib

import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from server.core.tokens import callback_token
from server.settings import Settings
from server.web.app import create_app

from . import pgserver
from .harness import API_TOKEN, CALLBACK_SECRET

# Property tests check behaviour, not speed: on a shared CI machine generating an input
# or running one example can take seconds, which must not fail a run.
hypothesis_settings.register_profile(
    "taskhook", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("taskhook")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/taskhook.db",
        callback_secrets=(CALLBACK_SECRET,),
        api_token=API_TOKEN,
        reconciler="off",
        archive=False,
        archive_dir=str(tmp_path / "files"),
        delivery=False,  # no background writes unless a test starts the service itself
    )


@pytest.fixture(scope="session")
def pg_databases():
    """Scratch databases on the test PostgreSQL server (skips without one; see pgserver)."""
    databases = pgserver.ScratchDatabases(pgserver.require_server())
    yield databases
    databases.drop_all()


@pytest.fixture
def postgres_url(pg_databases) -> str:
    """A migrated PostgreSQL database of this session, emptied for this test."""
    return pg_databases.empty()


@pytest.fixture
async def app(settings):
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://taskhook.test",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as c:
        yield c


def callback_path(provider: str, secret: str = CALLBACK_SECRET) -> str:
    return f"/callbacks/{provider}/{callback_token(secret, provider)}"


@contextlib.asynccontextmanager
async def serve_app(settings: Settings, **headers: str):
    """An in-process client for an app built from ``settings``, lifespan running."""
    application = create_app(settings)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://taskhook.test",
            headers=headers,
        ) as c,
    ):
        yield c
