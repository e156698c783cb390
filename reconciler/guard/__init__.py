"""What admission cannot guard: who may get around GitWarden, and GitWarden's own configuration.

`rbac` answers, from listed RBAC objects alone, which subjects hold a permission; `checks` names
the permissions that defeat GitWarden's admission and the identities expected to hold some of
them; `selfguard` compares the live ValidatingWebhookConfiguration with the expected one and
reports foreign field managers in GitWarden's namespace; `kube` is the only module here that
talks to the cluster. Nothing in this package imports the webhook: the command line renders the
expected webhook configuration and hands it over as a plain document.
"""
