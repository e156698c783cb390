"""The floor of bench_webhook: a WSGI app that parses the AdmissionReview and answers allow.

It reads the body, decodes the JSON (with orjson, as the webhook does), and answers
`allowed: true` for the request's uid: no validation, no policy call, no logging, no metrics.
So gunicorn, TLS, JSON and the loopback network are all it measures; bench_webhook serves it
with the same worker settings as the webhook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Parse the body, answer allow for its uid (GET: ok, for the bench's readiness wait)."""
    if environ["REQUEST_METHOD"] == "GET":
        start_response("200 OK", [("Content-Length", "3")])
        return [b"ok\n"]
    body = environ["wsgi.input"].read()
    try:
        uid = orjson.loads(body)["request"]["uid"]
    except (ValueError, KeyError, TypeError):
        start_response("400 Bad Request", [("Content-Length", "0")])
        return [b""]
    answer = orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": True},
        }
    )
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))]
    )
    return [answer]
