"""values.schema.json refuses what the chart could only render wrong.

Each case is a values file a user could plausibly write; helm must refuse it before rendering,
with a message naming the offending key. Keys the chart derives (the namespace, the GitOps
service account, the repository) cannot be set, so they can never disagree with the release.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.chart import render
from webhook import allowances

CASES = {
    "unknown top-level key": ({"webhooks": {"replicas": 2}}, "webhooks"),
    "unknown key in a section": ({"webhook": {"replica": 2}}, "replica"),
    "wrong type": ({"reconciler": {"replicas": "two"}}, "/reconciler/replicas"),
    "unknown admission key": (
        {"webhook": {"admission": {"intercept_status": True}}},
        "intercept_status",
    ),
    "derived namespace": ({"webhook": {"admission": {"namespace": "elsewhere"}}}, "namespace"),
    "derived GitOps account": (
        {"webhook": {"admission": {"gitops": {"service_account": "someone"}}}},
        "service_account",
    ),
    "a deleted default": (
        {"webhook": {"admission": {"system_allowances": None}}},
        "system_allowances",
    ),
    "unknown mode": (
        {"webhook": {"admission": {"modes": {"default": "off"}}}},
        "/webhook/admission/modes/default",
    ),
    "an RBAC verb beyond apply": (
        {
            "reconciler": {
                "rbac": {
                    "namespacedRules": [
                        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}
                    ]
                }
            }
        },
        "verbs",
    ),
    # The chart spells CEL strings as json.dumps does only for printable ASCII without a
    # backslash; anything else would make the live registration differ from the audit's.
    "a username the chart could not spell as Python does": (
        {"webhook": {"admission": {"exemptions": {"usernames": ["jos\u00e9"]}}}},
        "/webhook/admission/exemptions/usernames/0",
    ),
    "a short trust anchor": ({"reconciler": {"trust": {"anchor": "abc123"}}}, "anchor"),
    "OPA timeout past the webhook's": ({"webhook": {"opaTimeout": 4}}, "opaTimeout"),
    "a reconciler key the chart sets": (
        {"reconciler": {"config": {"server": {"listen": ":1"}}}},
        "server",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_schema_refuses(case: str, tmp_path: Path) -> None:
    values, named = CASES[case]
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    message = render.render_error(file)
    assert "schema" in message, message
    assert named in message, message


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (
            {"reconciler": {"rbac": {"scope": "namespaces"}}},
            "list them in reconciler.rbac.namespaces",
        ),
        ({"reconciler": {"push": {"enabled": True}}}, "reconciler.push.secretName is required"),
    ],
)
def test_settings_that_need_a_partner_are_refused_with_the_reason(
    values: dict[str, object], named: str, tmp_path: Path
) -> None:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    assert named in render.render_error(file)


def test_the_schema_knows_every_field_of_an_allowance() -> None:
    """A new allowance field (in webhook.allowances) must be accepted by the chart's schema."""
    schema = json.loads((render.CHART / "values.schema.json").read_text())
    admission = schema["properties"]["webhook"]["properties"]["admission"]["properties"]
    item = admission["system_allowances"]["items"]["properties"]
    expected = {"name", *allowances.LIST_FIELDS, *allowances.BOOL_FIELDS}
    assert set(item) == expected
