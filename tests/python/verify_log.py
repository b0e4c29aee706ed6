"""Verifies refbus's verifiable log from files and bytes alone, as an auditor in another office
would, following the C2SP specifications (signed-note, tlog-checkpoint, tlog-cosignature,
tlog-proof; RFC 6962/9162 Merkle trees) and docs/AUDIT.md, with no refbus code.

Usage:
  verify_log.py checkpoint --checkpoint FILE --notary-key VKEY
                [--witness-key VKEY ...] [--quorum N]
  verify_log.py receipt --receipt FILE --record FILE --subject SUBJECT --notary-key VKEY
                [--witness-key VKEY ...] [--quorum N] [--signing-key BASE64]

`checkpoint` checks the notary's signature on a checkpoint and that at least N of the given
witnesses cosigned it (cosignature/v1). `receipt` checks the same of the receipt's checkpoint,
that its entry names the record (stream sequence = index + 1, the subject, SHA-256 of the
record's exact bytes), that the inclusion proof leads from the entry to the checkpoint's root,
and, with --signing-key, the record's own signature (verify_record.py). Prints what it checked
and exits 0, or names the first failure and exits 1.
"""

import argparse
import base64
import hashlib
import os
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import verify_record  # noqa: E402  (the one-record check, reused)

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
PROOF_HEADER = "c2sp.org/tlog-proof@v1"


class Failure(Exception):
    """The first check that failed."""


def key_id(name, key_bytes):
    # signed-note: SHA-256(name || "\n" || type || public key)[:4]
    return hashlib.sha256(name.encode("utf-8") + b"\n" + key_bytes).digest()[:4]


def parse_vkey(vkey, alg):
    """A verifier key `<name>+<hex key id>+<base64(type || key)>`."""
    name, hex_id, data = vkey.strip().split("+", 2)
    key_bytes = base64.b64decode(data)
    if len(key_bytes) != 33 or key_bytes[0] != alg:
        raise Failure(f"{name}: not a key of signature type {alg:#04x}")
    if bytes.fromhex(hex_id) != key_id(name, key_bytes):
        raise Failure(f"{name}: the key id does not match the key")
    public = Ed25519PublicKey.from_public_bytes(key_bytes[1:])
    return name, key_id(name, key_bytes), public


def parse_note(text):
    """A signed note: its body (with its final newline) and its signature lines as
    (name, key id, signature bytes)."""
    if not text.endswith("\n") or "\n\n" not in text:
        raise Failure("not a signed note")
    body, signatures = text.rsplit("\n\n", 1)
    body += "\n"
    lines = []
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise Failure(f"not a signature line: {line!r}")
        name, data = line[2:].split(" ", 1)
        raw = base64.b64decode(data)
        lines.append((name, raw[:4], raw[4:]))
    return body, lines


def check_checkpoint(text, notary_vkey, witness_vkeys, quorum):
    """The checkpoint's body fields, after its signatures are checked."""
    body, signatures = parse_note(text)
    name, kid, key = parse_vkey(notary_vkey, ALG_ED25519)
    signed = False
    for sig_name, sig_id, sig in signatures:
        if sig_name == name and sig_id == kid:
            try:
                key.verify(sig, body.encode("utf-8"))
                signed = True
            except InvalidSignature:
                raise Failure(f"the notary's signature ({name}) does not match the checkpoint")
    if not signed:
        raise Failure(f"the checkpoint is not signed by the notary key {name}")
    lines = body.split("\n")
    origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2])
    if origin != name:
        raise Failure(f"the checkpoint is for the log {origin}, not {name}")
    cosigned = []
    for vkey in witness_vkeys:
        w_name, w_id, w_key = parse_vkey(vkey, ALG_COSIGNATURE_V1)
        for sig_name, sig_id, sig in signatures:
            if sig_name != w_name or sig_id != w_id or len(sig) != 72:
                continue
            (timestamp,) = struct.unpack(">Q", sig[:8])
            message = f"cosignature/v1\ntime {timestamp}\n{body}".encode("utf-8")
            try:
                w_key.verify(sig[8:], message)
                cosigned.append(w_name)
            except InvalidSignature:
                pass
    if len(cosigned) < quorum:
        raise Failure(
            f"quorum not met: {quorum} witness cosignature(s) required, {len(cosigned)} valid"
        )
    return origin, size, root, cosigned


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def check_inclusion(index, size, leaf_hash, proof, root):
    """RFC 9162, section 2.1.3.2: verifying an inclusion proof."""
    if index >= size:
        raise Failure(f"index {index} is beyond the tree of size {size}")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise Failure("the inclusion proof is too long")
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise Failure("the inclusion proof does not lead to the checkpoint's root")


def parse_entry(entry):
    """A refbus log entry, version 1 (docs/AUDIT.md)."""
    if len(entry) < 12 or entry[0] != 1:
        raise Failure("the entry is not a refbus log entry of version 1")
    kind = entry[1]
    (seq,) = struct.unpack(">Q", entry[2:10])
    (length,) = struct.unpack(">H", entry[10:12])
    subject = entry[12:12 + length].decode("utf-8")
    digest = entry[12 + length:]
    if len(digest) != 32:
        raise Failure("the entry's digest is not 32 bytes")
    return kind, seq, subject, digest


def check_receipt(text, record, subject, notary_vkey, witness_vkeys, quorum):
    head, checkpoint = text.split("\n\n", 1)
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise Failure(f"the receipt does not start with {PROOF_HEADER}")
    at = 1
    entry = None
    if lines[at].startswith("extra "):
        entry = base64.b64decode(lines[at][len("extra "):])
        at += 1
    if not lines[at].startswith("index "):
        raise Failure("no index line")
    index = int(lines[at][len("index "):])
    proof = [base64.b64decode(line) for line in lines[at + 1:]]
    origin, size, root, cosigned = check_checkpoint(checkpoint, notary_vkey, witness_vkeys, quorum)
    if entry is None:
        raise Failure("the receipt carries no entry")
    kind, seq, entry_subject, digest = parse_entry(entry)
    if kind != 0:
        raise Failure(f"the entry records a missing message (seq {seq})")
    if seq != index + 1:
        raise Failure(f"the entry is for seq {seq}, not the leaf's seq {index + 1}")
    if entry_subject != subject:
        raise Failure(f"the entry is for subject {entry_subject}, not {subject}")
    if digest != hashlib.sha256(record).digest():
        raise Failure("the entry's digest is not the record's SHA-256")
    leaf_hash = hashlib.sha256(b"\x00" + entry).digest()
    check_inclusion(index, size, leaf_hash, proof, root)
    return f"seq {seq} on {subject} is in the log {origin} of size {size}" + (
        f", cosigned by {', '.join(cosigned)}" if cosigned else ""
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["checkpoint", "receipt"])
    parser.add_argument("--checkpoint")
    parser.add_argument("--receipt")
    parser.add_argument("--record")
    parser.add_argument("--subject")
    parser.add_argument("--notary-key", required=True)
    parser.add_argument("--witness-key", action="append", default=[])
    parser.add_argument("--quorum", type=int, default=0)
    parser.add_argument("--signing-key")
    args = parser.parse_args()
    try:
        if args.what == "checkpoint":
            text = open(args.checkpoint, "rb").read().decode("utf-8")
            origin, size, _, cosigned = check_checkpoint(
                text, args.notary_key, args.witness_key, args.quorum
            )
            print(f"OK: checkpoint of {origin} at size {size}, cosigned by {len(cosigned)}")
        else:
            text = open(args.receipt, "rb").read().decode("utf-8")
            record = open(args.record, "rb").read()
            print("OK: " + check_receipt(
                text, record, args.subject, args.notary_key, args.witness_key, args.quorum
            ))
            if args.signing_key:
                print("OK: " + verify_record.verify(record, args.subject, args.signing_key))
    except (Failure, verify_record.Failure) as failure:
        print(f"FAIL: {failure}")
        sys.exit(1)
    except (ValueError, IndexError) as error:
        print(f"FAIL: malformed input: {error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
