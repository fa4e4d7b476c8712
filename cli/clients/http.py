"""The HTTP session of the bulk clients: idempotent requests retried, with jittered back-off.

A server may close a kept-alive connection just as the client reuses it (``RemoteDisconnected``); a proxy
may answer 502/503/504 for a moment. GET, HEAD, PUT, DELETE and OPTIONS are retried (up to ``RETRIES``
times, honouring ``Retry-After``); a kick-off POST is not, since sending it twice could start two jobs.
"""

from __future__ import annotations

import random

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

#: Tries after the first of an idempotent request that failed to connect, lost its connection or got 502-504.
RETRIES = 5


def retrying_session() -> requests.Session:
    """Return a session whose idempotent requests are retried with jittered exponential back-off."""
    retry = Retry(
        total=RETRIES,
        connect=RETRIES,
        read=RETRIES,
        status=RETRIES,
        backoff_factor=0.3,
        backoff_jitter=0.3,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def jittered(seconds: float) -> float:
    """Return ``seconds`` plus up to 10 % more: clients told the same delay do not all return at once."""
    return seconds * (1.0 + random.random() * 0.1)


__all__ = ["RETRIES", "jittered", "retrying_session"]
