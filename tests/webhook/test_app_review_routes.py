"""The thin WSGI layer in front of Flask: the same answers as the Flask routes, on every path.

Reviews are answered by `app.ReviewRoutes` without Flask's request machinery; these tests
check it answers every path the API server is registered with, exactly as the Flask route
behind it does (status, type, body), and a bug as Flask's error handler would: a 500 that
quotes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from tests.webhook import reviews
from tests.webhook.fakes import FakeEngine, FakeParents
from webhook import app as app_mod
from webhook import decision as decision_mod
from webhook import metrics as metrics_mod
from webhook import registration
from webhook.settings import WebhookSettings

GOLDEN = reviews.golden()
CASE = GOLDEN["cases"]["user_update_deployment_denied"]["input"]
BODY = reviews.body(reviews.review_from_input(CASE))
REVIEW_PATHS = (
    registration.PATH,
    registration.PROTECTED_NAMESPACE_PATH,
    registration.PARENT_PATH,
    registration.NAMESPACE_DELETE_PATH,
    registration.CRD_DELETE_PATH,
    "/validate/scale",
)


class _Exploding(FakeEngine):
    def decide(self, policy_input: Mapping[str, Any]) -> decision_mod.Decision:
        raise RuntimeError(f"boom while reading {policy_input['name']} s3cr3t-value")


def _app(engine: FakeEngine) -> Any:
    parents = FakeParents(labels={"gitwarden.dev/managed": "true"})
    return app_mod.create_app(
        WebhookSettings(), engine=engine, metrics=metrics_mod.Metrics(), parents=parents
    )


@pytest.mark.parametrize("path", REVIEW_PATHS)
def test_every_registered_review_path_is_answered_by_the_thin_layer_as_flask_would(
    path: str,
) -> None:
    app = _app(FakeEngine())
    assert isinstance(app.wsgi_app, app_mod.ReviewRoutes)
    thin = app.test_client().post(path, data=BODY, content_type="application/json")
    with app.test_request_context(path, method="POST", data=BODY, content_type="application/json"):
        flask = app.full_dispatch_request()  # the Flask route, without the layer in front
    for resp in (thin, flask):
        assert resp.status_code in (200, 400)
        assert resp.mimetype == "application/json"
    assert thin.status_code == flask.status_code
    assert thin.get_json() == flask.get_json()
    assert int(thin.headers["Content-Length"]) == len(thin.data)


def test_a_bad_body_is_the_same_400_through_both() -> None:
    app = _app(FakeEngine())
    thin = app.test_client().post("/validate", data=b"{", content_type="application/json")
    with app.test_request_context("/validate", method="POST", data=b"{"):
        flask = app.full_dispatch_request()
    assert thin.status_code == flask.status_code == 400
    assert thin.get_json() == flask.get_json()
    assert thin.get_json()["reason"].startswith("body is not JSON")


def test_a_bug_is_a_500_that_quotes_nothing_and_logs_only_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _app(_Exploding()).test_client()
    with caplog.at_level(logging.ERROR, logger="gitwarden.webhook"):
        resp = client.post("/validate", data=BODY, content_type="application/json")
    assert resp.status_code == 500
    assert resp.get_json() == {"error": "internal error"}
    assert "s3cr3t" not in resp.get_data(as_text=True)
    assert "RuntimeError" in caplog.text
    assert "s3cr3t" not in caplog.text
    assert "Traceback" not in caplog.text


def test_other_methods_and_paths_are_still_flasks() -> None:
    client = _app(FakeEngine()).test_client()
    assert client.get("/validate").status_code == 405
    assert client.put("/validate/parent", data=BODY).status_code == 405
    assert client.post("/validate/", data=BODY).status_code in (404, 308)
    assert client.get("/healthz").data == b"ok\n"
