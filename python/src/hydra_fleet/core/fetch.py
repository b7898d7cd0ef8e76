"""Read a running agent's JSON from the command line (`hydra-health status`, `hydra-launch ps`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from hydra_fleet.core.errors import HydraError

EX_UNAVAILABLE = 69  # sysexits.h: the service asked for does not answer
DEFAULT_AGENT_URL = "http://127.0.0.1:9446"


class UnreachableError(HydraError):
    """The agent did not answer: it is not running, or listens elsewhere."""

    exit_code = EX_UNAVAILABLE


def agent_url(listen_address: str, port: int) -> str:
    """The URL a local client uses for an agent listening on `listen_address:port`."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104 - mapping it
        listen_address, listen_address
    )
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def get_json(url: str, timeout: float = 10.0) -> Any:
    """GET `url` with `Accept: application/json`; `UnreachableError` (exit 69) when it fails."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as err:
        raise UnreachableError(f"{url} answered HTTP {err.code}") from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise UnreachableError(
            f"no answer from {url}: {reason} (is the agent running? give --url)"
        ) from None
