"""Container HEALTHCHECK for every oob-node role (the image's HEALTHCHECK runs it).

The image runs one role or all of them (``run``), so the check does not know which listeners
exist: it probes the health endpoint of every listener configured through the environment.
A listener that refuses the connection is not part of this role and is skipped; one that
accepts must answer ``/healthz`` with 200. At least one must answer. Exit 0 healthy, 1 not.
Standard library only: the final image has nothing else to spare.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

LISTENERS = (  # env var with host:port, default of the image
    ("OOB_BATCH_LISTEN", "0.0.0.0:8446"),
    ("OOB_PROCESSING_METRICS_LISTEN", "0.0.0.0:9464"),
    ("OOB_CONSOLE_LISTEN", "0.0.0.0:8080"),
)


def probe_url(listen: str) -> str:
    """Loopback URL of a listener's /healthz (a wildcard bind is reached on loopback)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def check(url: str, timeout: float = 3.0) -> bool | None:
    """True healthy, False unhealthy, None when nothing listens there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False
    except (ConnectionRefusedError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        return None if isinstance(reason, ConnectionRefusedError) else False
    except OSError:
        return False


def main() -> int:
    results = [check(probe_url(os.environ.get(var, default))) for var, default in LISTENERS]
    up = [r for r in results if r is not None]
    return 0 if up and all(up) else 1


if __name__ == "__main__":
    sys.exit(main())
