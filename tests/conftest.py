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

#: Every backend the route, crash and hostile-input tests run on (ids ``[sqlite]``, ``[postgres]``).
BACKENDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(why): the test is about SQLite itself (a file, a PRAGMA, sqlite3's backup);"
        " it runs on the sqlite backend only, and says why",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that needs a database (``backend``) once per backend.

    A test marked ``sqlite_only("why")`` runs on SQLite only; the reason is required.
    """
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("sqlite_only")
    if marker is not None and not (marker.args and str(marker.args[0]).strip()):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: sqlite_only needs a reason")
    names = ["sqlite"] if marker is not None else list(BACKENDS)
    metafunc.parametrize("backend", names, indirect=True, ids=names)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgres`` (parametrised by ``pytest_generate_tests``)."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path, request: pytest.FixtureRequest) -> str:
    """An empty, migrated-on-open database of ``backend`` for this test.

    SQLite: a file in the test's folder. PostgreSQL: the session's scratch
    database, emptied for this test (skips without a server, fails instead
    under TASKHOOK_REQUIRE_POSTGRES=1; see tests/pgserver.py).
    """
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path}/taskhook.db"


@pytest.fixture(scope="module", params=BACKENDS)
def module_backend(request: pytest.FixtureRequest) -> str:
    """``backend`` for module-scoped fixtures (servers a module's tests share)."""
    return str(request.param)


@pytest.fixture(scope="module")
def new_database(module_backend: str, request: pytest.FixtureRequest):
    """``new_database(folder)``: the URL of a new, empty database of ``module_backend``.

    SQLite: a file in ``folder``; PostgreSQL: a new database of the session
    (copied from its migrated template, dropped at the end of the session).
    """
    if module_backend == "postgres":
        databases = request.getfixturevalue("pg_databases")
        return lambda folder: databases.fresh()
    return lambda folder: f"sqlite:///{folder}/taskhook.db"


@pytest.fixture
def settings(database_url: str, tmp_path) -> Settings:
    return Settings(
        database_url=database_url,
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
