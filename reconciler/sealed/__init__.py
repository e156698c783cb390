"""SealedSecrets, compatible with Bitnami's controller and kubeseal: the only place that decrypts.

`wire` is the byte format, `keys` the key ring and its rotation policy, `objects` turns
SealedSecret objects into Secrets and back. The pipeline stage that uses them is
`reconciler.decrypt`; cluster access for the key Secrets is `reconciler.services.kube_keys`.
"""
