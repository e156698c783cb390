"""The straight line with fakes of our ports and a real signed repository: what is verified,
where the range starts, what the stored commit may (not) do, and that nothing unverified
reaches the applier."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib

import pytest
import yaml

from reconciler import changeset, config, decrypt, pipeline, trustbase, verify
from reconciler.sealed import objects
from tests import engine_fakes, revisions, sealed_keys
from tests.harness import signedrepo

NOW = dt.datetime.now(dt.UTC)


def cm(name: str) -> str:
    return yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "app"}}
    )


def sealed_file(name: str) -> str:
    body = objects.seal(
        {"kind": "Secret", "metadata": {"name": name, "namespace": "app"},
         "stringData": {"password": "hunter2-never-printed"}},
        sealed_keys.sealing_key(2048, 0).certificate,
        sealed_keys.EPOCH + dt.timedelta(days=1),
    )  # fmt: skip
    return yaml.safe_dump(body)


@dataclasses.dataclass
class World:
    repo: signedrepo.SignedRepo
    anchor: str
    cluster: engine_fakes.Cluster
    policy: engine_fakes.Policy
    cache: decrypt.OpenedCache = dataclasses.field(default_factory=decrypt.OpenedCache)

    def settings(self, **apply: object) -> config.ReconcilerConfig:
        return revisions.settings(("apps",), anchor=self.anchor, **apply)

    def run(
        self, last: pipeline.Applied | None = None, *, dry_run: bool = False, **apply: object
    ) -> tuple[pipeline.Applied, engine_fakes.Applier]:
        io, applier = engine_fakes.ports_for(
            self.repo, sealed_keys.ring(0), self.cluster, self.policy, self.cache
        )
        applied = pipeline.reconcile(io, self.settings(**apply), last, NOW, dry_run=dry_run)
        return applied, applier

    def refused(self, error: type[Exception], last: pipeline.Applied | None = None) -> Exception:
        io, applier = engine_fakes.ports_for(
            self.repo, sealed_keys.ring(0), self.cluster, self.policy
        )
        with pytest.raises(error) as caught:
            pipeline.reconcile(io, self.settings(), last, NOW)
        assert applier.plans == [], "nothing may reach the applier"
        return caught.value


@pytest.fixture
def world(tmp_path: pathlib.Path) -> World:
    repo = signedrepo.build(tmp_path)
    # History before the anchor is never looked at: this root commit is not even signed.
    repo.commit({"old.txt": "before signing was enforced"}, signed=False)
    anchor = repo.commit({"apps/a.yaml": cm("a")})
    return World(repo, anchor, engine_fakes.Cluster(), engine_fakes.Policy())


def test_the_first_pass_verifies_from_the_anchor_and_applies_the_tip(world: World) -> None:
    tip = world.repo.commit({"apps/a.yaml": cm("a"), "apps/s.yaml": sealed_file("db")})
    applied, applier = world.run()
    assert applied.commit == tip
    assert applied.verified.since == world.anchor
    assert applied.verified.mode is verify.Mode.ALL
    assert [s.principals for s in applied.verified.signers] == [(signedrepo.PRINCIPAL,)]
    assert world.policy.seen == [tip], "the commit policy sees every commit of the range"
    [(plan, dry_run)] = applier.plans
    assert not dry_run
    assert [str(o.ref) for o in plan.objects()] == ["/Secret/app/db", "/ConfigMap/app/a"]
    assert applied.changes.summary() == "2 created"
    assert applied.warnings == ()
    assert "hunter2" not in repr(applied)


def test_the_anchor_itself_is_applied_without_verifying_anything(world: World) -> None:
    applied, _ = world.run()
    assert applied.commit == world.anchor
    assert applied.verified.signers == ()


def test_an_unsigned_commit_on_top_is_refused_and_so_is_a_good_one_above_it(world: World) -> None:
    bad = world.repo.commit({"apps/a.yaml": cm("evil")}, signed=False)
    first = world.refused(verify.VerificationFailed)
    assert isinstance(first, verify.VerificationFailed)
    assert [sha for sha, _ in first.failures] == [bad]
    world.repo.commit({"apps/a.yaml": cm("fixed")})
    again = world.refused(verify.VerificationFailed)
    assert isinstance(again, verify.VerificationFailed)
    assert [sha for sha, _ in again.failures] == [bad]
    assert f"{bad}: unsigned: commit is not signed" in str(again)
    assert world.repo.tip() in str(again)


def test_a_commit_signed_by_an_untrusted_key_is_refused(world: World) -> None:
    world.repo.commit({"apps/a.yaml": cm("evil")}, trusted=False)
    world.refused(verify.VerificationFailed)


def test_an_attacker_written_stored_commit_does_not_let_an_unsigned_commit_through(
    world: World,
) -> None:
    unsigned = world.repo.commit({"apps/a.yaml": cm("evil")}, signed=False)
    # The attacker points the stored "last applied" at the unsigned commit (and, in a second
    # attempt, at the tip), hoping verification starts there.
    for stored in (unsigned, world.repo.tip()):
        world.cluster.stored = stored
        world.refused(verify.VerificationFailed)
    world.repo.commit({"apps/a.yaml": cm("more")})
    world.cluster.stored = world.repo.tip()
    world.refused(verify.VerificationFailed)


def test_a_stored_commit_below_the_anchor_is_ignored_and_reported(world: World) -> None:
    root = world.repo.repo.get(world.anchor).parent_ids[0]
    world.cluster.stored = str(root)
    applied, _ = world.run()
    assert applied.verified.since == world.anchor
    assert len(applied.warnings) == 1
    assert "does not descend from the trust anchor" in applied.warnings[0]


@pytest.mark.parametrize("stored", ["not-a-sha", "f" * 40])
def test_a_malformed_or_unknown_stored_commit_is_ignored_and_reported(
    world: World, stored: str
) -> None:
    world.cluster.stored = stored
    applied, _ = world.run()
    assert applied.warnings
    assert "ignored the stored last-applied commit" in applied.warnings[0]


def test_a_stored_commit_the_tip_no_longer_contains_is_a_refused_force_push(
    world: World,
) -> None:
    applied_before = world.repo.commit({"apps/a.yaml": cm("b")})
    world.cluster.stored = applied_before
    # The branch is rewritten to a signed sibling that drops the applied commit.
    world.repo.commit({"apps/a.yaml": cm("c")}, parents=(world.anchor,))
    assert applied_before in str(world.refused(trustbase.StoredForcePush))


def test_a_tip_that_does_not_descend_from_the_anchor_is_refused(world: World) -> None:
    world.repo.commit({"apps/a.yaml": cm("elsewhere")}, parents=())
    assert "trust anchor" in str(world.refused(trustbase.AnchorNotInHistory))


def test_a_later_pass_verifies_only_what_came_after_the_last_apply(world: World) -> None:
    world.repo.commit({"apps/a.yaml": cm("b")})
    first, _ = world.run()
    tip = world.repo.commit({"apps/a.yaml": cm("c")})
    world.policy.seen.clear()
    second, _ = world.run(first)
    assert second.verified.since == first.commit
    assert world.policy.seen == [tip]


def test_a_no_op_pass_in_the_same_process_does_no_rsa_operation(world: World) -> None:
    world.repo.commit({"apps/a.yaml": cm("a"), "apps/s.yaml": sealed_file("db")})
    first, _ = world.run()
    second, _ = world.run(first)
    assert (first.rsa_operations, second.rsa_operations) == (1, 0)
    [opened] = [o for o in second.plan.objects() if o.is_secret]
    assert opened.body_for_apply()["data"]["password"]  # opened from the cache, not empty


def test_a_later_pass_refuses_a_tip_that_drops_the_last_applied_commit(world: World) -> None:
    world.repo.commit({"apps/a.yaml": cm("b")})
    first, _ = world.run()
    world.repo.commit({"apps/a.yaml": cm("c")}, parents=(world.anchor,))
    world.refused(verify.ForcePushRefused, last=first)


def test_the_commit_policy_denial_stops_the_pass(world: World) -> None:
    tip = world.repo.commit({"apps/a.yaml": cm("b")})
    world.policy.deny[tip] = "needs two admins"
    refused = world.refused(verify.VerificationFailed)
    assert isinstance(refused, verify.VerificationFailed)
    assert refused.failures == ((tip, "policy-denied: needs two admins"),)


def test_dry_run_reaches_the_applier_as_such(world: World) -> None:
    applied, applier = world.run(dry_run=True)
    assert [dry for _, dry in applier.plans] == [True]
    assert applied.changes.counts() == {changeset.Action.CREATED: 1}


def test_discovery_from_the_cluster_port_decides_unknown_kinds(world: World) -> None:
    widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    world.repo.commit({"apps/a.yaml": cm("a"), "apps/w.yaml": widget})
    world.cluster.served[("example.com", "Widget")] = False
    applied, _ = world.run()
    assert "example.com/Widget//w" in [str(o.ref) for o in applied.plan.objects()]


def test_recovery_by_moving_the_anchor_to_a_signed_revert_applies_and_reports_the_old_store(
    world: World,
) -> None:
    applied_commit = world.repo.commit({"apps/a.yaml": cm("good")})
    world.cluster.stored = applied_commit
    world.repo.commit({"apps/a.yaml": cm("evil")}, signed=False)
    world.refused(verify.VerificationFailed)
    revert = world.repo.commit({"apps/a.yaml": cm("good")}, message="Revert the unsigned commit")
    world.anchor = revert  # the operator's configuration change, then a restart
    applied, _ = world.run()
    assert applied.commit == revert
    assert [str(o.ref) for o in applied.plan.objects()] == ["/ConfigMap/app/good"]
    [warning] = applied.warnings
    assert applied_commit in warning
    assert "does not descend from the trust anchor" in warning
