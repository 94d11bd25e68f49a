"""Upstream providers: payload parsing and the tasks-endpoint clients."""
