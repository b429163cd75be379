#!/usr/bin/env python3
"""Independent EIP-712 reference for Rapha receipts, using eth-account (PyPI).

Reads a JSON list of cases on stdin. For each case it builds the typed data of
docs/receipts.md, lets eth-account hash and sign it, and recovers the signer of the
signature the Rust code produced. Prints a JSON list of
{settlement_digest, settlement_signature, settlement_recovered,
 head_digest, head_signature, head_recovered, address}.
"""
import json
import sys

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak


def digest_of(signable):
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def settlement(c):
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Settlement": [
                {"name": "jobId", "type": "bytes32"},
                {"name": "outcome", "type": "uint8"},
                {"name": "receiptDigest", "type": "bytes32"},
                {"name": "payout", "type": "address"},
                {"name": "fee", "type": "uint256"},
                {"name": "token", "type": "address"},
                {"name": "logSize", "type": "uint64"},
                {"name": "logRoot", "type": "bytes32"},
            ],
        },
        "primaryType": "Settlement",
        "domain": {
            "name": "Rapha",
            "version": "1",
            "chainId": c["chain_id"],
            "verifyingContract": c["escrow"],
        },
        "message": {
            "jobId": bytes.fromhex(c["job_id"]),
            "outcome": c["outcome"],
            "receiptDigest": bytes.fromhex(c["receipt_digest"]),
            "payout": c["payout"],
            "fee": c["fee"],
            "token": c["token"],
            "logSize": c["log_size"],
            "logRoot": bytes.fromhex(c["log_root"]),
        },
    }


def tree_head(c):
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
            ],
            "TreeHead": [
                {"name": "treeSize", "type": "uint64"},
                {"name": "rootHash", "type": "bytes32"},
                {"name": "timestamp", "type": "uint64"},
            ],
        },
        "primaryType": "TreeHead",
        "domain": {"name": "Rapha Receipt Log", "version": "1"},
        "message": {
            "treeSize": c["tree_size"],
            "rootHash": bytes.fromhex(c["root_hash"]),
            "timestamp": c["timestamp"],
        },
    }


out = []
for c in json.load(sys.stdin):
    acct = Account.from_key(bytes.fromhex(c["secret"]))
    s = encode_typed_data(full_message=settlement(c))
    h = encode_typed_data(full_message=tree_head(c))
    out.append({
        "address": acct.address,
        "settlement_digest": digest_of(s).hex(),
        "settlement_signature": acct.sign_message(s).signature.hex(),
        "settlement_recovered": Account.recover_message(s, signature=bytes.fromhex(c["rust_settlement_signature"])),
        "head_digest": digest_of(h).hex(),
        "head_signature": acct.sign_message(h).signature.hex(),
        "head_recovered": Account.recover_message(h, signature=bytes.fromhex(c["rust_head_signature"])),
    })
json.dump(out, sys.stdout)
