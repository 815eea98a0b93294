"""Fake authorization server, Google token endpoint, Vault, 1Password Connect and AWS Secrets
Manager / Parameter Store, for the credential tests.

Built from libraries nobody here wrote: oauthlib serves RFC 6749 grants (client_credentials,
password, refresh_token), PyJWT verifies RFC 7523 assertions (Google service accounts and the
jwt_bearer grant) against the real key's public half, botocore's signer checks AWS SigV4
signatures, trustme makes the TLS certificate.

Usage: authserver.py DIR NAME[,NAME...]. Writes into DIR: fake-ca.pem (trust it), sa.json
(the real service-account key; its token_uri points here), sa-dummy.json (a dummy key for the
sandbox), jwt-key.pem (an RSA key for jwt_bearer), and log.jsonl (one line per request, with
what was verified). Prints {"port": N} on stdout once listening.

Admin: POST /admin/down and /admin/up make every token endpoint answer 503 or work again.
"""

import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import trustme
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth2 import RequestValidator, Server

DIR, NAMES = sys.argv[1], sys.argv[2].split(",")
EXPIRES_IN = int(os.environ.get("FAKE_EXPIRES_IN", "3600"))
LOCK = threading.Lock()
STATE = {"down": False, "minted": 0}
CLIENTS = {"client-1": "cs-c4n4ry-secret"}
USERS = {"alice": "pw-c4n4ry-alice"}
REFRESH = {"rt-c4n4ry-1": "client-1"}
VAULT_TOKEN = "hvs.c4n4ry-vault-token"
VAULT = {"secret/team/openai": {"api_key": "sk-c4n4ry-from-vault", "owner": "ml"}}
# 1Password Connect (https://developer.1password.com/docs/connect/connect-api-reference/):
# vaults and items by id, titles found with `filter=name eq "…"` / `title eq "…"`.
OP_TOKEN = "op-connect-c4n4ry-token"
OP_VAULTS = [{"id": "7vqkxqjz4bfn3tt2xwnvodwmbi", "name": "ai-agents"}]
OP_ITEMS = {
    "7vqkxqjz4bfn3tt2xwnvodwmbi": [
        {
            "id": "j2ovpfxgdxvl5nhbrqyklgzd3m",
            "title": "anthropic",
            "category": "API_CREDENTIAL",
            "sections": [{"id": "s1", "label": "staging"}],
            "fields": [
                {"id": "credential", "label": "credential", "type": "CONCEALED", "value": "sk-ant-c4n4ry-from-1password"},
                {
                    "id": "f2",
                    "label": "credential",
                    "type": "CONCEALED",
                    "value": "sk-ant-c4n4ry-staging",
                    "section": {"id": "s1"},
                },
            ],
        }
    ]
}
# AWS Secrets Manager (GetSecretValue) and Parameter Store (GetParameter), JSON protocol 1.1,
# for the gateway's own credentials below.
AWS_KEYS = Credentials("AKIAGATEWAY000000001", "gw-secret-c4n4ry-aws", "gw-session-c4n4ry")
AWS_SM = {"prod/openai": json.dumps({"api_key": "sk-c4n4ry-from-aws-sm", "org": "ml"})}
AWS_SSM = {"/team/anthropic": "sk-ant-c4n4ry-from-ssm"}


def log(entry):
    with LOCK:
        with open(os.path.join(DIR, "log.jsonl"), "a") as f:
            f.write(json.dumps(entry) + "\n")


def next_token(prefix):
    with LOCK:
        STATE["minted"] += 1
        return f"{prefix}-c4n4ry-{STATE['minted']}"


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Validator(RequestValidator):
    def client_authentication_required(self, request, *a, **k):
        return True

    def authenticate_client(self, request, *a, **k):
        cid, secret = request.client_id, request.client_secret
        if CLIENTS.get(cid) == secret:
            request.client = type("Client", (), {"client_id": cid})()
            return True
        return False

    def authenticate_client_id(self, client_id, request, *a, **k):
        return False

    def validate_grant_type(self, client_id, grant_type, client, request, *a, **k):
        return grant_type in ("client_credentials", "password", "refresh_token")

    def validate_scopes(self, client_id, scopes, client, request, *a, **k):
        return True

    def get_default_scopes(self, client_id, request, *a, **k):
        return ["read"]

    def validate_user(self, username, password, client, request, *a, **k):
        return USERS.get(username) == password

    def validate_refresh_token(self, refresh_token, client, request, *a, **k):
        return REFRESH.get(refresh_token) == client.client_id

    def get_original_scopes(self, refresh_token, request, *a, **k):
        return ["read"]

    def save_bearer_token(self, token, request, *a, **k):
        token["access_token"] = next_token("oauth")
        if "refresh_token" in token:
            # Rotation: the new refresh token replaces the old one.
            with LOCK:
                REFRESH[token["refresh_token"]] = request.client.client_id
        log({"kind": "oauth", "grant": request.grant_type, "token": token["access_token"], "client_id": request.client.client_id})


SERVER = Server(Validator(), token_expires_in=EXPIRES_IN)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, headers=None):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for k, v in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        path = url.path
        if path.startswith("/v1/vaults"):
            return self.op_connect(path, dict(urllib.parse.parse_qsl(url.query)))
        if path == "/google/certs":
            # Like https://www.googleapis.com/oauth2/v1/certs: key id -> PEM.
            public = (
                KEYS["google"]
                .public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            )
            return self.reply(200, json.dumps({"fake-google-1": public.decode()}))
        if path.startswith("/v1/secret/data/"):
            key = "secret/" + path[len("/v1/secret/data/") :]
            log({"kind": "vault", "path": key, "token_ok": self.headers.get("X-Vault-Token") == VAULT_TOKEN})
            if self.headers.get("X-Vault-Token") != VAULT_TOKEN:
                return self.reply(403, json.dumps({"errors": ["permission denied"]}))
            if key not in VAULT:
                return self.reply(404, json.dumps({"errors": []}))
            doc = {"data": {"data": VAULT[key], "metadata": {"version": 1}}}
            return self.reply(200, json.dumps(doc))
        self.reply(404, "{}")

    def op_connect(self, path, query):
        ok = self.headers.get("Authorization") == f"Bearer {OP_TOKEN}"
        log({"kind": "op_connect", "path": path, "filter": query.get("filter"), "token_ok": ok})
        if not ok:
            return self.reply(401, json.dumps({"status": 401, "message": "Invalid token signature"}))

        def filtered(rows, key):
            f = query.get("filter")
            if not f:
                return rows
            want = f.split(" eq ", 1)[1].strip('"')
            return [r for r in rows if r[key] == want]

        parts = path.strip("/").split("/")  # v1 vaults [id [items [id]]]
        if len(parts) == 2:
            return self.reply(200, json.dumps(filtered(OP_VAULTS, "name")))
        items = OP_ITEMS.get(parts[2])
        if items is None:
            return self.reply(404, json.dumps({"status": 404, "message": "vault not found"}))
        if len(parts) == 4:
            brief = [{"id": i["id"], "title": i["title"]} for i in items]
            return self.reply(200, json.dumps(filtered(brief, "title")))
        for i in items:
            if len(parts) == 5 and i["id"] == parts[4]:
                return self.reply(200, json.dumps(i))
        return self.reply(404, json.dumps({"status": 404, "message": "item not found"}))

    def do_POST(self):
        path = urllib.parse.urlparse(self.path).path
        body = self.body()
        if path in ("/admin/down", "/admin/up"):
            STATE["down"] = path == "/admin/down"
            return self.reply(200, "{}")
        if STATE["down"]:
            return self.reply(503, "unavailable", {"Content-Type": "text/plain"})
        if self.headers.get("X-Amz-Target"):
            return self.aws(body)
        form = dict(urllib.parse.parse_qsl(body.decode()))
        if path == "/google/token":
            return self.google(form)
        if path == "/oauth/token":
            if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                return self.jwt_bearer(form)
            headers, out, status = SERVER.create_token_response(self.path, "POST", body.decode(), dict(self.headers))
            log({"kind": "oauth_request", "status": status, "form_keys": sorted(form), "x_tenant": self.headers.get("X-Tenant")})
            return self.reply(status, out, headers)
        self.reply(404, "{}")

    def aws(self, body):
        """Checks the SigV4 signature with botocore's signer at the request's own X-Amz-Date."""
        target = self.headers["X-Amz-Target"]
        auth = self.headers.get("Authorization", "")
        fields = dict(p.strip().split("=", 1) for p in auth.split(" ", 1)[-1].split(",") if "=" in p)
        try:
            key, _date, region, service, _ = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
            req = AWSRequest(
                method="POST",
                url=f"https://{self.headers['Host']}{self.path}",
                data=body,
                headers={n: self.headers[n] for n in signed if n != "host"},
            )
            req.context["timestamp"] = self.headers["X-Amz-Date"]
            signer = SigV4Auth(AWS_KEYS, service, region)
            canonical = signer.canonical_request(req)
            ok = (
                key == AWS_KEYS.access_key and signer.signature(signer.string_to_sign(req, canonical), req) == fields["Signature"]
            )
            ok = ok and self.headers.get("X-Amz-Security-Token") == AWS_KEYS.token
        except (KeyError, ValueError):
            ok, region, service = False, None, None
        doc = json.loads(body or b"{}")
        log({"kind": "aws", "target": target, "verified": ok, "region": region, "service": service, "request": doc})
        if not ok:
            return self.reply(403, json.dumps({"__type": "InvalidSignatureException", "message": "bad signature"}))
        if target == "secretsmanager.GetSecretValue" and doc.get("SecretId") in AWS_SM:
            return self.reply(200, json.dumps({"Name": doc["SecretId"], "SecretString": AWS_SM[doc["SecretId"]]}))
        if target == "AmazonSSM.GetParameter" and doc.get("Name") in AWS_SSM:
            value = AWS_SSM[doc["Name"]] if doc.get("WithDecryption") else "AQICAHencrypted"
            return self.reply(200, json.dumps({"Parameter": {"Name": doc["Name"], "Value": value}}))
        kind = "ParameterNotFound" if target.startswith("AmazonSSM") else "ResourceNotFoundException"
        self.reply(400, json.dumps({"__type": f"com.amazonaws.{kind}#{kind}", "message": "not found"}))

    def google(self, form):
        pub = KEYS["sa"].public_key()
        entry = {"kind": "google", "grant_type": form.get("grant_type")}
        try:
            claims = jwt.decode(form.get("assertion", ""), pub, algorithms=["RS256"], audience=TOKEN_URI)
            header = jwt.get_unverified_header(form["assertion"])
            entry.update(verified=True, claims=claims, kid=header.get("kid"))
        except Exception as e:  # noqa: BLE001 - any failure is a refusal
            entry.update(verified=False, error=str(e))
            log(entry)
            return self.reply(400, json.dumps({"error": "invalid_grant"}))
        if "target_audience" in claims:
            # An ID token, signed by "Google" (our key, published at /google/certs).
            now = int(time.time())
            id_claims = {
                "iss": "https://accounts.google.com",
                "aud": claims["target_audience"],
                "azp": claims["iss"],
                "email": claims["iss"],
                "email_verified": True,
                "sub": "1" + str(STATE["minted"]).zfill(20),
                "iat": now,
                "exp": now + 3600,
            }
            token = jwt.encode(id_claims, KEYS["google"], algorithm="RS256", headers={"kid": "fake-google-1"})
            entry["id_token"] = token
            log(entry)
            return self.reply(200, json.dumps({"id_token": token}))
        token = next_token("ya29")
        entry["token"] = token
        log(entry)
        self.reply(200, json.dumps({"access_token": token, "expires_in": EXPIRES_IN, "token_type": "Bearer"}))

    def jwt_bearer(self, form):
        pub = KEYS["jwt"].public_key()
        entry = {"kind": "jwt_bearer"}
        try:
            claims = jwt.decode(form.get("assertion", ""), pub, algorithms=["RS256"], audience="https://api.test/")
            entry.update(verified=True, claims=claims)
        except Exception as e:  # noqa: BLE001
            entry.update(verified=False, error=str(e))
            log(entry)
            return self.reply(400, json.dumps({"error": "invalid_grant"}))
        token = next_token("jwt")
        entry["token"] = token
        log(entry)
        self.reply(200, json.dumps({"access_token": token, "expires_in": EXPIRES_IN, "token_type": "Bearer"}))


KEYS = {"sa": rsa_key(), "dummy": rsa_key(), "jwt": rsa_key(), "google": rsa_key()}
httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
PORT = httpd.server_address[1]
TOKEN_URI = f"https://{NAMES[0]}:{PORT}/google/token"

ca = trustme.CA()
ca.cert_pem.write_to_path(os.path.join(DIR, "fake-ca.pem"))
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ca.issue_cert(*NAMES, "127.0.0.1").configure_cert(ctx)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)


def keyfile(name, key, uri):
    return {
        "type": "service_account",
        "project_id": "centaur-test",
        "private_key_id": f"kid-{name}",
        "private_key": pem(key),
        "client_email": f"{name}@centaur-test.iam.gserviceaccount.com",
        "client_id": "1234",
        "token_uri": uri,
    }


with open(os.path.join(DIR, "sa.json"), "w") as f:
    json.dump(keyfile("real", KEYS["sa"], TOKEN_URI), f)
with open(os.path.join(DIR, "sa-dummy.json"), "w") as f:
    json.dump(keyfile("dummy", KEYS["dummy"], "https://oauth2.googleapis.com/token"), f)
with open(os.path.join(DIR, "jwt-key.pem"), "w") as f:
    f.write(pem(KEYS["jwt"]))
print(json.dumps({"port": PORT}), flush=True)
httpd.serve_forever()
