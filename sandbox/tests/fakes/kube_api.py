"""A fake Kubernetes API server, faithful to the documented REST protocol for what the
Kubernetes sandbox backend and kubectl use. There is no cluster on the test machines; this is
the stand-in, and what it does not do is listed in the README's known gaps.

Usage: kube_api.py DIR TOKEN. Serves HTTPS on 127.0.0.1:0 (kubectl never sends a bearer
token over plain HTTP) with a fresh trustme CA, writes DIR/kubeconfig (server, CA, token) and
prints {"port": N} once listening. Every request is appended to DIR/requests.jsonl as
{"method", "path", "query", "content_type"}.

What it serves (https://kubernetes.io/docs/reference/using-api/api-concepts/):
* discovery: /version, /api, /apis, /api/v1, /apis/networking.k8s.io/v1;
* namespaced CRUD of pods, services, configmaps, secrets, persistentvolumeclaims (v1) and networkpolicies
  (networking.k8s.io/v1): create (409 AlreadyExists), get (404 NotFound with a Status),
  list with labelSelector (=, !=, exists) and fieldSelector metadata.name, replace, delete;
  list across namespaces;
* server-side apply: PATCH with application/apply-patch+yaml and ?fieldManager= (400
  without it) creates or updates; another manager's apply of a field this manager set, with
  different values and without ?force=true, is a 409 Conflict;
* watch (?watch=true from a resourceVersion): ADDED, MODIFIED and DELETED events as JSON
  lines, ended after timeoutSeconds;
* the garbage collector: deleting an object deletes, in the background, every object whose
  ownerReferences name its uid (propagationPolicy Orphan keeps them);
* what controllers would set: uid, resourceVersion, creationTimestamp, generation;
  a Service's clusterIP; a Pod goes Pending → Running with Ready=True and a podIP after
  --ready seconds (the kubelet's part).

* exec into a pod (the pods/exec subresource over a WebSocket) and running the containers of
  pods whose image a test registered: see kubelet.py.

Test controls (not Kubernetes): POST /_fake/fail {"kind", "name" (a suffix), "times"} makes
the next create or apply of a matching object fail with 500; POST /_fake/unready {"name"}
keeps a matching pod Pending; POST /_fake/hold {"prefix"} keeps every pod created from now on
whose name starts with it Pending ({} to stop); POST /_fake/image {"image", "bin"} runs the pods of that image
(kubelet.py).
"""

import base64
import copy
import datetime
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kubelet as runner
import trustme

DIR, TOKEN = sys.argv[1], sys.argv[2]
READY_AFTER = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2

# (group/version path, plural) → (kind, namespaced)
RESOURCES = {
    ("api/v1", "pods"): "Pod",
    ("api/v1", "services"): "Service",
    ("api/v1", "configmaps"): "ConfigMap",
    ("api/v1", "secrets"): "Secret",
    ("api/v1", "persistentvolumeclaims"): "PersistentVolumeClaim",
    ("apis/networking.k8s.io/v1", "networkpolicies"): "NetworkPolicy",
}
SHORT = {
    "pods": ["po"],
    "services": ["svc"],
    "configmaps": ["cm"],
    "networkpolicies": ["netpol"],
    "persistentvolumeclaims": ["pvc"],
}
API_VERSION = {"api/v1": "v1", "apis/networking.k8s.io/v1": "networking.k8s.io/v1"}

LOCK = threading.Condition()
OBJECTS = {}  # (gv, plural, namespace, name) → object
EVENTS = []  # (resourceVersion, gv, plural, type, object)
STATE = {"rv": 1000, "ip": 10}
FAULTS = []  # {"kind", "name", "times"}
UNREADY = set()
HELD = []  # name prefixes whose pods stay Pending (/_fake/hold)


def now():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code, reason, message, details=None):
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


def record(gv, plural, kind, obj):
    """Stores obj with a new resourceVersion and logs the event. Call with LOCK held."""
    STATE["rv"] += 1
    obj["metadata"]["resourceVersion"] = str(STATE["rv"])
    key = (gv, plural, obj["metadata"]["namespace"], obj["metadata"]["name"])
    if kind == "DELETED":
        OBJECTS.pop(key, None)
        if plural == "pods":
            runner.stop(key[2], key[3])
    else:
        OBJECTS[key] = obj
    EVENTS.append((STATE["rv"], gv, plural, kind, copy.deepcopy(obj)))
    LOCK.notify_all()


def fault(kind, name):
    for f in FAULTS:
        if f["kind"] == kind and name.endswith(f["name"]) and f["times"] > 0:
            f["times"] -= 1
            return True
    return False


def admit(gv, plural, ns, obj):
    """Fills in what the API server and controllers set on a new object."""
    m = obj["metadata"]
    m["namespace"] = ns
    m["uid"] = str(uuid.uuid4())
    m["creationTimestamp"] = now()
    m["generation"] = 1
    kind = RESOURCES[(gv, plural)]
    if kind == "Service":
        STATE["ip"] += 1
        obj.setdefault("spec", {})["clusterIP"] = f"10.96.{STATE['ip'] // 250}.{STATE['ip'] % 250 + 1}"
        obj["spec"]["clusterIPs"] = [obj["spec"]["clusterIP"]]
    if kind == "Pod":
        obj["status"] = {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}
        if m["name"] not in UNREADY and not any(m["name"].startswith(p) for p in HELD):
            threading.Timer(READY_AFTER, kubelet, (gv, plural, ns, m["name"], m["uid"])).start()
    if kind == "PersistentVolumeClaim":
        # A provisioner binds it at once (the fake kubelet keeps its files in DIR/claims).
        obj["status"] = {"phase": "Bound", "accessModes": obj.get("spec", {}).get("accessModes", [])}
    if kind == "Secret":
        for k, v in obj.pop("stringData", {}).items():
            obj.setdefault("data", {})[k] = base64.b64encode(v.encode()).decode()


def kubelet(gv, plural, ns, name, uid):
    with LOCK:
        obj = OBJECTS.get((gv, plural, ns, name))
        if obj is None or obj["metadata"]["uid"] != uid:
            return
        obj = copy.deepcopy(obj)
        objects = dict(OBJECTS)
    try:
        started, error = runner.start(obj, objects, DIR, exited)
        # A readiness probe is the kubelet's to pass; a pod without one is ready once it runs.
        ready = started and runner.ready(obj)
    except Exception as e:  # noqa: BLE001 - a fake's own bug shows on the pod, not as a silent stall
        started, error, ready = False, f"fake kubelet: {type(e).__name__}: {e}", False
    with LOCK:
        now_obj = OBJECTS.get((gv, plural, ns, name))
        if now_obj is None or now_obj["metadata"]["uid"] != uid:
            return
        if now_obj.get("status", {}).get("phase") in ("Failed", "Succeeded"):
            return
        obj = copy.deepcopy(now_obj)
        if error:
            obj["status"] = {
                "phase": "Pending",
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainerCreating", "message": error}],
            }
            record(gv, plural, "MODIFIED", obj)
            return
        STATE["ip"] += 1
        obj["status"] = {
            "phase": "Running",
            "podIP": f"10.244.0.{STATE['ip'] % 250 + 1}",
            "conditions": [{"type": "Ready", "status": "True" if ready or not started else "False", "lastTransitionTime": now()}],
        }
        record(gv, plural, "MODIFIED", obj)


def exited(ns, name, uid, code):
    """A container the fake kubelet ran ended (restartPolicy Never: the pod is done)."""
    with LOCK:
        obj = OBJECTS.get(("api/v1", "pods", ns, name))
        if obj is None or obj["metadata"]["uid"] != uid:
            return
        obj = copy.deepcopy(obj)
        obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
        obj["status"]["conditions"] = [{"type": "Ready", "status": "False", "lastTransitionTime": now()}]
        obj["status"]["containerStatuses"] = [
            {"name": obj["spec"]["containers"][0]["name"], "ready": False, "state": {"terminated": {"exitCode": code}}}
        ]
        record("api/v1", "pods", "MODIFIED", obj)


def collect(uid):
    """The garbage collector: deletes every dependent of uid, recursively. LOCK held."""
    for key, obj in list(OBJECTS.items()):
        owners = obj["metadata"].get("ownerReferences", [])
        if any(o.get("uid") == uid for o in owners):
            record(key[0], key[1], "DELETED", copy.deepcopy(obj))
            collect(obj["metadata"]["uid"])


def selected(obj, labels, fields):
    have = obj["metadata"].get("labels", {})
    for term in filter(None, (labels or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if have.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if have.get(k.rstrip("=")) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in have:
                return False
        elif term not in have:
            return False
    for term in filter(None, (fields or "").split(",")):
        k, v = term.split("=", 1)
        if k == "metadata.name" and obj["metadata"]["name"] != v:
            return False
        if k == "metadata.namespace" and obj["metadata"]["namespace"] != v:
            return False
    return True


def owned_fields(obj, prefix=""):
    """The leaf paths of an applied object (what a manager owns), with their values."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if prefix == "" and k in ("apiVersion", "kind"):
                continue
            out.update(owned_fields(v, f"{prefix}.{k}"))
    else:
        out[prefix] = obj
    return out


def apply(gv, plural, ns, name, body, query):
    manager = query.get("fieldManager", [""])[0]
    if not manager:
        return status(400, "BadRequest", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value')
    force = query.get("force", ["false"])[0] == "true"
    kind = RESOURCES[(gv, plural)]
    if body.get("kind") != kind or body.get("metadata", {}).get("name") != name:
        return status(400, "BadRequest", f"the apply body must be a {kind} named {name}")
    if fault(kind, name):
        return status(500, "InternalError", f"injected failure applying {kind} {name}")
    fields = owned_fields(body)
    with LOCK:
        old = OBJECTS.get((gv, plural, ns, name))
        if old is None:
            obj = copy.deepcopy(body)
            admit(gv, plural, ns, obj)
            obj["metadata"]["managedFields"] = [{"manager": manager, "operation": "Apply", "fields": fields}]
            record(gv, plural, "ADDED", obj)
            return 201, obj
        conflicts = []
        for mf in old["metadata"].get("managedFields", []):
            if mf["manager"] == manager:
                continue
            for path, value in fields.items():
                if path in mf["fields"] and mf["fields"][path] != value:
                    conflicts.append(f'conflict with "{mf["manager"]}": {path}')
        if conflicts and not force:
            return status(409, "Conflict", f"Apply failed with {len(conflicts)} conflict: " + "; ".join(conflicts))
        obj = copy.deepcopy(body)
        keep = {k: old["metadata"][k] for k in ("uid", "creationTimestamp", "namespace") if k in old["metadata"]}
        obj["metadata"].update(keep)
        obj["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if "status" in old:
            obj["status"] = old["status"]
        if kind == "Service":
            obj.setdefault("spec", {})["clusterIP"] = old["spec"]["clusterIP"]
            obj["spec"]["clusterIPs"] = old["spec"]["clusterIPs"]
        managers = [mf for mf in old["metadata"].get("managedFields", []) if mf["manager"] != manager]
        obj["metadata"]["managedFields"] = managers + [{"manager": manager, "operation": "Apply", "fields": fields}]
        record(gv, plural, "MODIFIED", obj)
        return 200, obj


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}") if n else {}

    def route(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        with open(f"{DIR}/requests.jsonl", "a") as f:
            line = {"method": method, "path": url.path, "query": url.query, "content_type": self.headers.get("Content-Type")}
            f.write(json.dumps(line) + "\n")
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.send(*status(401, "Unauthorized", "Unauthorized"))
        parts = [p for p in url.path.split("/") if p]
        if url.path.startswith("/_fake/"):
            return self.control(parts[1])
        if method == "GET" and (found := discovery(url.path)) is not None:
            return self.send(200, found)
        gv_len = 2 if parts[:1] == ["api"] else 3
        gv = "/".join(parts[:gv_len])
        rest = parts[gv_len:]
        if len(rest) == 1 and (gv, rest[0]) in RESOURCES and method == "GET":
            return self.listing(gv, rest[0], None, query)
        if len(rest) < 3 or rest[0] != "namespaces" or (gv, rest[2]) not in RESOURCES:
            return self.send(*status(404, "NotFound", f"the server could not find the requested resource ({url.path})"))
        ns, plural = rest[1], rest[2]
        name = rest[3] if len(rest) > 3 else None
        if plural == "pods" and rest[4:] == ["exec"] and method in ("GET", "POST"):
            with LOCK:
                found = ("api/v1", "pods", ns, name) in OBJECTS
            if not found:
                return self.send(*status(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"}))
            refused = runner.exec_ws(self, ns, name, query)
            return refused and self.send(*status(*refused))
        if name is None:
            if method == "GET":
                return self.listing(gv, plural, ns, query)
            if method == "POST":
                return self.create(gv, plural, ns, self.body())
        elif method == "GET":
            return self.get(gv, plural, ns, name)
        elif method == "PATCH":
            if self.headers.get("Content-Type", "").startswith("application/apply-patch"):
                return self.send(*apply(gv, plural, ns, name, self.body(), query))
            return self.send(*status(415, "UnsupportedMediaType", "only server-side apply patches are served"))
        elif method == "PUT":
            return self.replace(gv, plural, ns, name, self.body())
        elif method == "DELETE":
            return self.delete(gv, plural, ns, name, self.body(), query)
        return self.send(*status(405, "MethodNotAllowed", f"{method} is not allowed on {url.path}"))

    def control(self, what):
        b = self.body()
        with LOCK:
            if what == "fail":
                FAULTS.append({"kind": b["kind"], "name": b.get("name", ""), "times": b.get("times", 1)})
            elif what == "unready":
                UNREADY.add(b["name"])
            elif what == "hold":
                HELD[:] = [b["prefix"]] if b.get("prefix") else []
            elif what == "image":
                runner.register(b)
        self.send(200, {"ok": True})

    def get(self, gv, plural, ns, name):
        with LOCK:
            obj = OBJECTS.get((gv, plural, ns, name))
        if obj is None:
            return self.send(*status(404, "NotFound", f'{plural} "{name}" not found', {"name": name, "kind": plural}))
        self.send(200, dict(obj, apiVersion=API_VERSION[gv], kind=RESOURCES[(gv, plural)]))

    def listing(self, gv, plural, ns, query):
        labels = query.get("labelSelector", [""])[0]
        fields = query.get("fieldSelector", [""])[0]
        if query.get("watch", ["false"])[0] in ("true", "1"):
            return self.watch(gv, plural, ns, query, labels, fields)
        with LOCK:
            items = [
                dict(o, apiVersion=API_VERSION[gv], kind=RESOURCES[(gv, plural)])
                for (g, p, n, _), o in sorted(OBJECTS.items())
                if g == gv and p == plural and (ns is None or n == ns) and selected(o, labels, fields)
            ]
            rv = str(STATE["rv"])
        kind = RESOURCES[(gv, plural)] + "List"
        self.send(200, {"kind": kind, "apiVersion": API_VERSION[gv], "metadata": {"resourceVersion": rv}, "items": items})

    def watch(self, gv, plural, ns, query, labels, fields):
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        deadline = time.time() + float(query.get("timeoutSeconds", ["30"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = since
        while time.time() < deadline:
            with LOCK:
                events = [e for e in EVENTS if e[0] > sent and e[1] == gv and e[2] == plural]
                if not events:
                    LOCK.wait(timeout=max(0.0, min(1.0, deadline - time.time())))
                    continue
            for rv, _, _, kind, obj in events:
                sent = rv
                if (ns is None or obj["metadata"]["namespace"] == ns) and selected(obj, labels, fields):
                    line = (
                        json.dumps({"type": kind, "object": dict(obj, apiVersion=API_VERSION[gv], kind=RESOURCES[(gv, plural)])})
                        + "\n"
                    )
                    try:
                        self.wfile.write(f"{len(line.encode()):x}\r\n{line}\r\n".encode())
                        self.wfile.flush()
                    except OSError:
                        return
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    def create(self, gv, plural, ns, obj):
        kind = RESOURCES[(gv, plural)]
        name = obj.get("metadata", {}).get("name")
        if obj.get("kind") != kind or not name:
            return self.send(*status(400, "BadRequest", f"the body must be a {kind} with metadata.name"))
        if fault(kind, name):
            return self.send(*status(500, "InternalError", f"injected failure creating {kind} {name}"))
        with LOCK:
            if (gv, plural, ns, name) in OBJECTS:
                return self.send(*status(409, "AlreadyExists", f'{plural} "{name}" already exists'))
            obj = copy.deepcopy(obj)
            admit(gv, plural, ns, obj)
            record(gv, plural, "ADDED", obj)
        self.send(201, obj)

    def replace(self, gv, plural, ns, name, obj):
        with LOCK:
            old = OBJECTS.get((gv, plural, ns, name))
            if old is None:
                return self.send(*status(404, "NotFound", f'{plural} "{name}" not found'))
            want = obj.get("metadata", {}).get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                return self.send(
                    *status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    )
                )
            obj = copy.deepcopy(obj)
            obj["metadata"].update({k: old["metadata"][k] for k in ("uid", "creationTimestamp", "namespace")})
            record(gv, plural, "MODIFIED", obj)
        self.send(200, obj)

    def delete(self, gv, plural, ns, name, body, query):
        policy = query.get("propagationPolicy", [body.get("propagationPolicy", "Background")])[0]
        with LOCK:
            obj = OBJECTS.get((gv, plural, ns, name))
            if obj is None:
                return self.send(*status(404, "NotFound", f'{plural} "{name}" not found', {"name": name, "kind": plural}))
            record(gv, plural, "DELETED", copy.deepcopy(obj))
            if policy != "Orphan":
                collect(obj["metadata"]["uid"])
        self.send(200, dict(obj, apiVersion=API_VERSION[gv], kind=RESOURCES[(gv, plural)]))

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_PATCH(self):
        self.route("PATCH")

    def do_DELETE(self):
        self.route("DELETE")


def discovery(path):
    def resources(gv):
        return [
            {
                "name": p,
                "singularName": k.lower(),
                "namespaced": True,
                "kind": k,
                "shortNames": SHORT.get(p, []),
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }
            for (g, p), k in RESOURCES.items()
            if g == gv
        ]

    if path == "/version":
        return {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }
    if path == "/apis":
        v = {"groupVersion": "networking.k8s.io/v1", "version": "v1"}
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{"name": "networking.k8s.io", "versions": [v], "preferredVersion": v}],
        }
    for gv, api_version in API_VERSION.items():
        if path == f"/{gv}":
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources(gv)}
    return None


def main():
    if os.geteuid() == 0:
        runner.host_address()
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    ca_data = base64.b64encode(ca.cert_pem.bytes()).decode()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": f"https://127.0.0.1:{port}", "certificate-authority-data": ca_data}}],
        "users": [{"name": "centaur", "user": {"token": TOKEN}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "centaur", "namespace": "agents"}}],
        "current-context": "fake",
    }
    with open(f"{DIR}/kubeconfig", "w") as f:
        json.dump(kubeconfig, f)
    print(json.dumps({"port": port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
