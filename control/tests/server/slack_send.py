#!/usr/bin/env python3
"""Sends one Slack Events API request the way Slack does, signed by Slack's own SDK
(slack_sdk.signature.SignatureVerifier), with Python's requests; prints the answer as JSON
(`{"status": N, "body": ...}`). Options spoil it on purpose: --secret (a wrong one),
--age (seconds in the past), --tamper (change the body after signing), --unsigned.

Usage: slack_send.py URL SECRET BODY_JSON [--age N] [--tamper] [--unsigned] [--retry N]"""

import argparse
import json
import time

import requests
from slack_sdk.signature import SignatureVerifier

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("secret")
p.add_argument("body")
p.add_argument("--age", type=int, default=0)
p.add_argument("--tamper", action="store_true")
p.add_argument("--unsigned", action="store_true")
p.add_argument("--retry", type=int)
a = p.parse_args()

body = a.body
ts = str(int(time.time()) - a.age)
signature = SignatureVerifier(a.secret).generate_signature(timestamp=ts, body=body)
assert SignatureVerifier(a.secret).is_valid(body=body, timestamp=ts, signature=signature) or a.age > 300
if a.tamper:
    body = body.replace("e", "E", 1)
headers = {"Content-Type": "application/json"}
if not a.unsigned:
    headers.update({"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature})
if a.retry is not None:
    headers.update({"X-Slack-Retry-Num": str(a.retry), "X-Slack-Retry-Reason": "http_timeout"})
started = time.monotonic()
r = requests.post(a.url, data=body.encode(), headers=headers, timeout=10)
elapsed = time.monotonic() - started
try:
    answer = r.json()
except ValueError:
    answer = r.text
print(json.dumps({"status": r.status_code, "body": answer, "seconds": elapsed}))
