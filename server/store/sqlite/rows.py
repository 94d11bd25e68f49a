"""The shared column lists and converters (``server.store.rows``), under their older name."""

from server.store.rows import *  # noqa: F403
from server.store.rows import __all__ as __all__
