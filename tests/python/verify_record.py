"""Verifies one stored refbus record from its bytes alone, as an auditor in another office would.

Usage: verify_record.py --message FILE --subject SUBJECT --key BASE64

FILE holds the message payload exactly as JetStream stored it, SUBJECT the subject it was stored
on, and BASE64 the author's Ed25519 public signing key as the registry lists it. Checks, without
any refbus code: the event is in canonical form, the stored hash is SHA-256 of its exact bytes,
the signature's key id is the key's fingerprint, and the Ed25519 signature covers
b"refbus.v1.event-signature\\n" + subject + b"\\n" + the event's bytes. Prints what it checked and
exits 0, or names the first failure and exits 1.
"""

import argparse
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DOMAIN = b"refbus.v1.event-signature\n"


class Failure(Exception):
    """The first check that failed."""


def fail(message):
    raise Failure(message)


def verify(payload, subject, key_base64):
    """Checks one stored record (`payload`: its exact bytes) stored on `subject`, signed with
    the Ed25519 key `key_base64`; returns what was checked, or raises Failure."""
    raw = payload.decode("utf-8")
    record = json.loads(raw)
    # The record's format: absent on records written before formats were recorded (format 1).
    found = record.get("format", 1) if isinstance(record, dict) else None
    if found != 1:
        fail(f"record format {found} is unknown; this verifier reads format 1")
    # The event's exact bytes: the value of "event", where the record starts.
    prefix = '{"event":'
    if not raw.startswith(prefix):
        fail("the record does not start with its event")
    _, end = json.JSONDecoder().raw_decode(raw, len(prefix))
    event_text = raw[len(prefix):end]
    event = record["event"]

    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if canonical != event_text:
        fail("the event is not in canonical form")
    digest = hashlib.sha256(event_text.encode("utf-8")).hexdigest()
    if digest != record["hash"]:
        fail(f"the stored hash {record['hash']} is not the event's SHA-256 {digest}")

    key_bytes = base64.b64decode(key_base64)
    key = Ed25519PublicKey.from_public_bytes(key_bytes)
    signature = record["sig"]
    if hashlib.sha256(key_bytes).hexdigest()[:16] != signature["key"]:
        fail(f"the record is signed with key {signature['key']}, not this one")
    signed = DOMAIN + subject.encode("utf-8") + b"\n" + event_text.encode("utf-8")
    try:
        key.verify(base64.b64decode(signature["value"]), signed)
    except InvalidSignature:
        fail("the signature does not match the subject and the event")
    return (
        f"event {event['seq']} of referral {event['referral_id']} "
        f"({event['change']['type']}), signed by {signature['by']}"
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--message", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    try:
        checked = verify(open(args.message, "rb").read(), args.subject, args.key)
    except Failure as failure:
        print(f"FAIL: {failure}")
        sys.exit(1)
    print(f"OK: {checked}")


if __name__ == "__main__":
    main()
