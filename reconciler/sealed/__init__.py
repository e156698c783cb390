"""SealedSecrets, compatible with Bitnami's controller and kubeseal: the only place that decrypts.

`wire` is the byte format, `keys` the key ring and its rotation policy, `objects` turns
SealedSecret objects into Secrets and back, `decrypt` is the pipeline stage. Cluster access for
the key Secrets lives outside this package, in `reconciler.services.kube_keys`.
"""
