"""The `gitwarden` command line: composes the webhook and reconciler packages into subcommands.

It is the only package allowed to import both components; each subcommand lives in its own
module and registers itself through `register(subparsers)`.
"""
