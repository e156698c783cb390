"""In-cluster services that run beside the reconcile loop; they are not pipeline stages.

`kube_keys` keeps the sealing keys as labelled Secrets, `certserver` serves the newest
certificate at `/v1/cert.pem`, and `keyservice` composes the two on a schedule. Stages may read
the key ring through `kube_keys`; nothing here imports a stage or the pipeline.
"""
