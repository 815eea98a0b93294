"""botocore on both sides of the gateway's aws_auth transform.

send:   signs a request with placeholder AWS keys using botocore's own signer (the header
        form, or a presigned URL with --presign), sends it through the gateway's CONNECT
        listener with requests, and prints {"status", "body"}.
verify: reads the request the origin received (JSON: method, path, query, headers, body),
        recomputes its signature with botocore's signer and the real keys at the request's
        own X-Amz-Date, and prints "ok" or what differs.

Usage: aws_sigv4.py send PROXY CA URL SERVICE REGION BODY|- [--presign]
       aws_sigv4.py verify KEY_ID SECRET TOKEN|- SEEN_JSON"""

import hashlib
import json
import sys

import requests
from botocore.auth import S3SigV4Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PLACEHOLDER = Credentials("AKIAPLACEHOLDER00000", "placeholder-secret", "placeholder-token")


def send(proxy, ca, url, service, region, body, presign):
    data = None if body == "-" else body.encode()
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues"}
    req = AWSRequest(method="POST" if data else "GET", url=url, data=data, headers=headers)
    if presign:
        SigV4QueryAuth(PLACEHOLDER, service, region, expires=300).add_auth(req)
    elif service == "s3":
        S3SigV4Auth(PLACEHOLDER, service, region).add_auth(req)
    else:
        SigV4Auth(PLACEHOLDER, service, region).add_auth(req)
    p = req.prepare()
    r = requests.request(p.method, p.url, headers=dict(p.headers), data=p.body, proxies={"https": proxy}, verify=ca, timeout=10)
    print(json.dumps({"status": r.status_code, "body": r.text}))


def verify(key_id, secret, token, seen):
    seen = json.loads(seen)
    h = seen["headers"]
    auth = h["authorization"]
    fields = dict(p.strip().split("=", 1) for p in auth.split(" ", 1)[1].split(","))
    cred_key, date, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    problems = []
    if cred_key != key_id:
        problems.append(f"signed with key {cred_key}")
    if date != h["x-amz-date"][:8]:
        problems.append("scope date is not the request's date")
    if token != "-" and h.get("x-amz-security-token") != token:
        problems.append("session token not the real one")
    body = seen["body"].encode()
    sha = h["x-amz-content-sha256"]
    if sha != "UNSIGNED-PAYLOAD" and sha != hashlib.sha256(body).hexdigest():
        problems.append("x-amz-content-sha256 is not the body's hash")
    url = "https://" + h["host"] + seen["path"] + ("?" + seen["query"] if seen["query"] else "")
    req = AWSRequest(method=seen["method"], url=url, data=body, headers={n: h[n] for n in signed if n != "host"})
    cls = S3SigV4Auth if service == "s3" else SigV4Auth
    signer = cls(Credentials(key_id, secret, None if token == "-" else token), service, region)
    req.context["timestamp"] = h["x-amz-date"]
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    if expected != fields["Signature"]:
        problems.append(f"signature differs from botocore's; botocore's canonical request:\n{canonical}")
    print("ok" if not problems else "\n".join(problems))


if sys.argv[1] == "send":
    send(*sys.argv[2:8], presign="--presign" in sys.argv)
else:
    verify(*sys.argv[2:6])
