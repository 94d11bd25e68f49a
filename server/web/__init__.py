"""The HTTP side: the Starlette app, its routes, the dashboard and the OpenAPI schema."""
