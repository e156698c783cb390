"""The baseline of bench_webhook: a WSGI app that answers every request with a fixed allow.

It does no parsing and no policy call, so gunicorn, TLS and the loopback network are all it
measures; bench_webhook serves it with the same worker settings as the webhook.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

_ALLOW = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "fixed", "allowed": True},
    }
).encode()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Drain the body, answer the fixed allow."""
    stream = environ["wsgi.input"]
    while stream.read(65536):
        pass
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(_ALLOW)))]
    )
    return [_ALLOW]
