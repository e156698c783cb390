"""Unsealing throughput of the decrypt stage next to its floor, measured in the same run.

The floor is the raw RSA-4096 OAEP-SHA256 private-key decryption rate of the same library
(`cryptography`) over the same wrapped session keys: every value costs at least one such
operation, so `stage rate / floor rate` says how much the rest (framing, AES-GCM, object rules,
key choice) costs. Run as `python -m bench.bench_unseal [--values N]`; bounded to at most
5,000 values and prints rates and the ratio. Owns nothing the product uses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from reconciler import decrypt, manifests
from reconciler.sealed import keys, objects, wire
from tests import revisions

VALUES_PER_OBJECT = 10
MAX_VALUES = 5000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--values", type=int, default=1000)
    args = parser.parse_args()
    count = max(VALUES_PER_OBJECT, min(args.values, MAX_VALUES))
    objects_count = count // VALUES_PER_OBJECT
    count = objects_count * VALUES_PER_OBJECT

    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    key = keys.generate(now, keys.KeyPolicy(bits=4096))
    print(f"RSA-4096 key generated in {time.perf_counter() - started:.2f} s")

    items = []
    for i in range(objects_count):
        body = objects.seal(
            {
                "kind": "Secret",
                "metadata": {"name": f"secret-{i}", "namespace": "bench"},
                "stringData": {f"key-{j}": f"value {i}.{j} " * 4 for j in range(VALUES_PER_OBJECT)},
            },
            key.certificate,
            now,
        )
        items.append(manifests.Manifest.of(f"bench/{i}.yaml#0", body))
    loaded = manifests.Manifests(revisions.verified("bench"), tuple(items))

    wrapped = [
        wire.split(wire.decode_text(text)).wrapped_key
        for item in items
        for text in item.body["spec"]["encryptedData"].values()
    ]
    oaep = [
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label)
        for item in items
        for label in [f"bench/{item.name}".encode()] * VALUES_PER_OBJECT
    ]
    floor_seconds = _time_floor(key.private_key, wrapped, oaep)

    ring = keys.KeyRing.of([key])
    started = time.perf_counter()
    result = decrypt.run(loaded, ring)
    stage_seconds = time.perf_counter() - started
    assert len(result.secrets) == objects_count
    assert result.rsa_operations == count

    floor_rate = count / floor_seconds
    stage_rate = count / stage_seconds
    print(f"values: {count} in {objects_count} SealedSecrets (RSA-4096, 1 key)")
    print(f"floor  raw RSA-OAEP decrypt : {floor_rate:8.1f} values/s ({floor_seconds:.2f} s)")
    print(f"stage  decrypt.run (unseal) : {stage_rate:8.1f} values/s ({stage_seconds:.2f} s)")
    print(f"ratio  stage/floor          : {stage_rate / floor_rate:8.3f}")


def _time_floor(
    private_key: rsa.RSAPrivateKey, wrapped: list[bytes], oaep: list[padding.OAEP]
) -> float:
    started = time.perf_counter()
    for ciphertext, pad in zip(wrapped, oaep, strict=True):
        private_key.decrypt(ciphertext, pad)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
