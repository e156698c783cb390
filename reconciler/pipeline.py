"""The reconciler on one page: fetch → verify → load → decrypt → plan → apply.

Owns only the order of the stages and what each hands the next (`Checkout → VerifiedRevision →
Manifests → DecryptedManifests → ApplyPlan → ChangeSet`), each a frozen value that only the next
stage accepts. It does no I/O of its own, no logging, no retries and no status: the loop (or
`gitwarden reconcile --once`) turns the outcome or the error (`Transient` / `Stalled`) into
status, Events, metrics and the next schedule.

CONTRACT SKETCH (the engine work fills it in; names may move, the straight line must not):

    def reconcile(ports: Ports, target: Target, last: Applied | None, now) -> Applied:
        checkout  = ports.source.fetch(since=last.commit if last else target.trust_anchor)
        verified  = verify.verify(checkout, target.trust, verify.Mode.ALL, ports.commit_policy, now)
        trustbase.check_stored(verified, ports.cluster.stored_commit())   # ignore + report, or refuse
        loaded    = load.run(verified, target.load)
        decrypted = decrypt.run(loaded, ports.keys.ring(), last.key_hints if last else NO_HINTS)
        planned   = plan.build(decrypted, ports.cluster.inventory(), target.plan)
        changes   = apply.run(planned, ports.cluster, target.apply, dry_run=target.dry_run)
        return Applied(verified, planned, changes, decrypted.key_hints)

Trust base: at start (no `last`) the range is (anchor, tip]; a pass after a successful one in the
same process verifies (last applied, tip]. The commit stored in the cluster's status never sets
the range's base: it is only checked (a stored commit that descends from the anchor but is not
an ancestor of the tip is a force-push and is refused; one that is not a descendant of the
anchor is ignored and reported).
"""
