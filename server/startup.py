"""What a start of taskhook says once: the first-start banner and a secrets mismatch.

The banner is printed when secrets were generated: ``export`` lines a user can
paste into a shell, the callback URLs, and, when those URLs point at this
machine, one line saying to set ``PUBLIC_URL``. The mismatch warning is one
line naming which variable differs from the stored value, never either value.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from server.core.tokens import callback_url
from server.providers import PROVIDERS
from server.secrets import Secrets
from server.settings import Settings

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})


def is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in LOCAL_HOSTS or host.endswith(".localhost")


def banner(settings: Settings, secrets: Secrets) -> str:
    """The generated secrets and the callback URLs (``secrets show`` prints them again)."""
    lines = ["taskhook generated secrets and stored them in the database (shown only now):"]
    if "API_TOKEN" in secrets.generated:
        lines.append(f"  export API_TOKEN={secrets.api_token}")
    if "CALLBACK_SECRETS" in secrets.generated:
        lines.append(f"  export CALLBACK_SECRETS={','.join(secrets.callback_secrets)}")
    lines.append("Callback URLs to pass as callback_url:")
    for provider in PROVIDERS:
        url = callback_url(settings.base_url, secrets.callback_secrets[0], provider)
        lines.append(f"  {provider:<10} {url}")
    if is_local(settings.base_url):
        lines.append(
            "These URLs name this machine, which no provider can reach: set PUBLIC_URL to the "
            "address providers can call (e.g. PUBLIC_URL=https://taskhook.example.com) and run "
            "python -m server callback-url PROVIDER."
        )
    return "\n".join(lines)
