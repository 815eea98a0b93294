"""The fake API server's kubelet: runs the containers of pods whose image a test registered,
as local processes under bubblewrap, and serves `exec` into them over a WebSocket.

What it honours of a pod (https://kubernetes.io/docs/concepts/workloads/pods/): its init
containers, one by one to success, then the first container: command and args, `env`
values, workingDir, runAsUser and runAsGroup (setpriv), fsGroup (a supplementary group;
volume files are root's, that group's and group-readable, as the kubelet makes them), and
volumes mounted where the container says: emptyDir, persistentVolumeClaim (a directory per
claim that outlives its pods, in DIR/claims), configMap and secret (their keys, or `items`,
as files; `defaultMode`), readOnly and subPath (a missing one made as root's 0755 folder, as
the kubelet does). The root filesystem is read-only (a bubblewrap tmpfs root, remounted
read-only, with the host's /usr and /etc bound read-only), with a PID namespace of its own.
Each pod has a network namespace of its own with its loopback (and the pod's sysctls). The
pod network is reduced to what a Centaur sandbox's NetworkPolicies allow: a sandbox pod
has one link, to its own gateway pod, which answers on it at the gateway Service's cluster
IP; nothing else is reachable from it. A gateway pod has one more, to HOST_IP on the host
(where a test's server listens: the gateways' way to the control plane's Service), and no
default route. No other link exists (the server reaches pods only through exec), and no
other NetworkPolicy is modelled. With `dnsPolicy: None`, /etc/resolv.conf is written from
the pod's dnsConfig. A container
with a readinessProbe (httpGet) is ready once the probe passes inside that namespace; an
image's entrypoint comes with its registration. A deleted pod's processes are killed at once (no grace period).

A registered image (POST /_fake/image {"image", "bin", "entrypoint"?}) brings a directory
that plays the image's programs: it is mounted at /image/bin, first on PATH. envFrom
(secretRef, configMapRef) is honoured.

Exec (GET .../pods/NAME/exec?command=…&stdin=…&stdout=…&stderr=…) speaks the WebSocket
subprotocols `v5.channel.k8s.io` and `v4.channel.k8s.io`
(https://github.com/kubernetes/enhancements/tree/master/keps/sig-api-machinery/4006-transition-spdy-to-websockets):
binary messages whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 the status
as a v1 Status, 255 v5's end of a stream: [255, channel]). The process's stdin closes at the
client's end of stdin or when the WebSocket closes; the process itself runs to its end, as
in a real cluster.
"""

import base64
import hashlib
import json
import os
import queue
import random
import select
import shlex
import signal
import struct
import subprocess
import threading
import time

# Containers are started by one thread that lives as long as this process: bubblewrap's
# --die-with-parent is the parent *thread*'s death, and a container must die with the fake,
# not with the timer thread that saw its pod scheduled.
SPAWNS = queue.Queue()


def _spawner():
    while True:
        argv, kwargs, answer = SPAWNS.get()
        try:
            answer.put(subprocess.Popen(argv, **kwargs))
        except OSError as e:
            answer.put(e)


threading.Thread(target=_spawner, daemon=True).start()


def _spawn(argv, **kwargs):
    answer = queue.Queue()
    SPAWNS.put((argv, kwargs, answer))
    proc = answer.get()
    if isinstance(proc, OSError):
        raise proc
    return proc


IMAGES = {}  # image → {"bin": host directory}
PODS = {}  # (namespace, name) → {"proc": Popen, "args": bwrap args, "env": [...], "cwd", "uid", "gid"}
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def register(body):
    IMAGES[body["image"]] = {"bin": body["bin"], "entrypoint": body.get("entrypoint", [])}


def _root_args():
    args = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--new-session"]
    for name in sorted(os.listdir("/")):
        path = "/" + name
        if name not in ("usr", "bin", "lib", "lib64", "sbin", "opt"):
            continue
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    # /etc entry by entry, so a volume can be mounted at a new path under it (a real
    # kubelet makes mount points in the container's root).
    args += ["--dir", "/etc"]
    for name in sorted(os.listdir("/etc")):
        path = "/etc/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
    return args + ["--proc", "/proc", "--dev", "/dev"]


def _resolv_conf(pod, state_dir):
    """With `dnsPolicy: None`, the kubelet writes the container's /etc/resolv.conf from the
    pod's dnsConfig (its nameservers, searches and options); the bwrap arguments that mount
    it. Other pods keep the host's, as the fake has no cluster DNS."""
    spec, meta = pod["spec"], pod["metadata"]
    dns = spec.get("dnsConfig") or {}
    if spec.get("dnsPolicy") != "None" or not dns.get("nameservers"):
        return []
    lines = [f"nameserver {ns}" for ns in dns["nameservers"][:3]]
    if dns.get("searches"):
        lines.append("search " + " ".join(dns["searches"]))
    opts = [o["name"] + (f":{o['value']}" if o.get("value") is not None else "") for o in dns.get("options", [])]
    if opts:
        lines.append("options " + " ".join(opts))
    path = os.path.join(state_dir, "pods", f"{meta['namespace']}_{meta['name']}.resolv.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return ["--ro-bind", path, "/etc/resolv.conf"]


def _own(path, fs_group, mode):
    """A volume folder: root's with `mode`, or with fsGroup that group's, rwx and setgid."""
    if fs_group is None:
        os.chown(path, 0, 0)
        os.chmod(path, mode)
    else:
        os.chown(path, 0, fs_group)
        os.chmod(path, mode | 0o2770)


def _parents(path):
    """Mount points' parent directories, made 0755 (bubblewrap makes missing ones 0700)."""
    out = []
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        out += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i])]
    return out


def _volume_dir(root, vol, objects, ns, fs_group):
    """Materialises one volume under root; returns its host directory or an error. As the
    kubelet: files and folders are root's; with the pod's fsGroup they are that group's,
    group-readable (and group-writable where writable), folders setgid."""
    path = os.path.join(root, "volumes", vol["name"])
    os.makedirs(path, exist_ok=True)
    if "emptyDir" in vol:
        _own(path, fs_group, 0o777)
        return path, None
    if "persistentVolumeClaim" in vol:
        # The claim's files outlive the pod: one directory per claim, shared by its pods.
        name = vol["persistentVolumeClaim"]["claimName"]
        if ("api/v1", "persistentvolumeclaims", ns, name) not in objects:
            return None, f'persistentvolumeclaim "{name}" not found'
        path = os.path.join(os.path.dirname(os.path.dirname(root)), "claims", f"{ns}_{name}")
        if not os.path.isdir(path):
            os.makedirs(path)
            _own(path, fs_group, 0o755)
        return path, None
    for kind, ref, mode_default in (("configMap", "name", 0o644), ("secret", "secretName", 0o644)):
        if kind not in vol:
            continue
        src = vol[kind]
        plural = "configmaps" if kind == "configMap" else "secrets"
        obj = objects.get(("api/v1", plural, ns, src[ref]))
        if obj is None:
            return None, f'{kind} "{src[ref]}" not found'
        data = dict(obj.get("data", {}))
        if kind == "secret":
            data = {k: base64.b64decode(v) for k, v in data.items()}
        else:
            data = {k: v.encode() for k, v in data.items()}
        items = src.get("items") or [{"key": k, "path": k} for k in data]
        mode = src.get("defaultMode", mode_default)
        for item in items:
            if item["key"] not in data:
                return None, f'{kind} "{src[ref]}" has no key {item["key"]}'
            target = os.path.join(path, item["path"])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data[item["key"]])
            mode_bits = item.get("mode", mode)
            if fs_group is not None:
                mode_bits |= 0o440
            os.chmod(target, mode_bits)
            os.chown(target, 0, fs_group if fs_group is not None else 0)
        return path, None
    return None, f"volume {vol['name']}: only emptyDir, configMap and secret volumes are served"


def _volumes(pod, objects, state_dir):
    """The pod's volumes as host directories ({name: path}), or an error."""
    meta, spec = pod["metadata"], pod["spec"]
    fs_group = _fs_group(spec)
    root = os.path.join(state_dir, "pods", f"{meta['namespace']}_{meta['name']}_{meta['uid']}")
    os.makedirs(root, exist_ok=True)
    volumes = {}
    for vol in spec.get("volumes", []):
        path, err = _volume_dir(root, vol, objects, meta["namespace"], fs_group)
        if err:
            return None, err
        volumes[vol["name"]] = path
    return volumes, None


def _fs_group(spec):
    g = spec.get("securityContext", {}).get("fsGroup")
    return int(g) if g is not None else None


def prepare(pod, c, volumes, objects):
    """The bwrap arguments, environment and user of container `c` of the pod, or an error."""
    meta, spec = pod["metadata"], pod["spec"]
    image = IMAGES[c["image"]]
    sec = dict(spec.get("securityContext", {}), **c.get("securityContext", {}))
    uid = int(sec.get("runAsUser", 0))
    gid = int(sec.get("runAsGroup", uid))
    args = _root_args() + _parents("/image/bin") + ["--ro-bind", image["bin"], "/image/bin"]
    for m in c.get("volumeMounts", []):
        src = volumes.get(m["name"])
        if src is None:
            return None, f"volumeMount {m['name']}: no such volume"
        if m.get("subPath"):
            src = os.path.join(src, m["subPath"])
            if not os.path.exists(src):
                # The kubelet makes a missing subPath as root's directory, 0755, whatever the
                # pod's user (kubernetes/kubernetes#41638): a non-root pod cannot write it.
                os.makedirs(src, mode=0o755)
                os.chown(src, 0, 0)
        args += _parents(m["mountPath"])
        args += ["--ro-bind" if m.get("readOnly") else "--bind", src, m["mountPath"]]
    env = {"PATH": "/image/bin:/usr/local/bin:/usr/bin:/bin", "HOSTNAME": spec.get("hostname", meta["name"])}
    for source in c.get("envFrom", []):
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        plural = "secrets" if "secretRef" in source else "configmaps"
        obj = objects.get(("api/v1", plural, meta["namespace"], ref.get("name")))
        if obj is None:
            return None, f"envFrom: {plural} {ref.get('name')!r} not found"
        for k, v in obj.get("data", {}).items():
            env[k] = base64.b64decode(v).decode() if plural == "secrets" else v
    for e in c.get("env", []):
        if "value" not in e:
            return None, f"env {e['name']}: only literal values are served"
        env[e["name"]] = e["value"]
    cwd = c.get("workingDir", "/")
    return {"args": args, "env": env, "cwd": cwd, "uid": uid, "gid": gid, "groups": _fs_group(spec)}, None


def _command(ctx, argv):
    # The root is read-only once every mount point is made.
    cmd = list(ctx["args"]) + ["--remount-ro", "/", "--clearenv"]
    for k, v in ctx["env"].items():
        cmd += ["--setenv", k, v]
    cmd += ["--chdir", ctx["cwd"], "--"]
    if ctx["uid"]:
        groups = f"--groups={ctx['groups']}" if ctx["groups"] is not None else "--clear-groups"
        cmd += ["setpriv", f"--reuid={ctx['uid']}", f"--regid={ctx['gid']}", groups, "--"]
    return cmd + argv


def _argv(c):
    """A container's command (its image's entrypoint when it names none) and args."""
    command = c.get("command") or IMAGES[c["image"]]["entrypoint"]
    return list(command) + list(c.get("args", []))


def _netns(pod):
    """The prefix that gives a container a network namespace of its own, with its loopback up
    and the pod's (namespaced) sysctls set: the pod's network, without a pod network."""
    script = ["ip link set lo up"]
    for sysctl in pod.get("spec", {}).get("securityContext", {}).get("sysctls", []):
        path = "/proc/sys/" + sysctl["name"].replace(".", "/")
        script.append(f"echo {shlex.quote(str(sysctl['value']))} > {shlex.quote(path)}")
    script.append('exec "$@"')
    return ["unshare", "--net", "--", "sh", "-c", " && ".join(script), "sh"]


LINKS = {"n": 0}


def _own_netns(proc):
    """Waits until the container's process is in its own network namespace. `unshare` makes
    it after the process starts: a link moved to the process before that lands in the host's
    namespace, and is then missing from the pod's (a loaded CI machine showed it)."""
    host = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if os.readlink(f"/proc/{proc.pid}/ns/net") != host:
                return None
        except OSError:
            pass
        time.sleep(0.01)
    return "pod network: the container never got a network namespace of its own"


def _link_to_gateway(pod, pid):
    """The pod network, reduced to what a Centaur sandbox's NetworkPolicy allows: a sandbox
    pod (role `sandbox`) gets one link, to its own gateway pod, which answers there at the
    gateway Service's cluster IP (the sandbox's resolver and proxy). Nothing else is
    reachable from the sandbox pod. Other pods get no link."""
    labels = pod["metadata"].get("labels", {})
    if labels.get("centaur.dev/role") != "sandbox":
        return None
    service_ip = (pod["spec"].get("dnsConfig", {}).get("nameservers") or [None])[0]
    gw = next(
        (
            ctx
            # A copy: other pods start and stop in other threads meanwhile.
            for (ns, name), ctx in list(PODS.items())
            if ns == pod["metadata"]["namespace"] and name == pod["metadata"]["name"] + "-gateway"
        ),
        None,
    )
    if gw is None or service_ip is None:
        return None
    LINKS["n"] += 1
    n = LINKS["n"]
    pod_ip = f"10.244.{n // 250}.{n % 250 + 1}"
    # Unique on the host while several fakes run (a name is at most 15 characters).
    tag = f"{os.getpid() % 100000}x{n}"
    sandbox_end, gateway_end = f"ks{tag}", f"kg{tag}"
    steps = [
        ["ip", "link", "add", sandbox_end, "type", "veth", "peer", "name", gateway_end],
        ["ip", "link", "set", sandbox_end, "netns", str(pid)],
        ["ip", "link", "set", gateway_end, "netns", str(gw["proc"].pid)],
        _in(gw, ["ip", "addr", "add", f"{service_ip}/32", "dev", gateway_end]),
        _in(gw, ["ip", "link", "set", gateway_end, "up"]),
        _in(gw, ["ip", "route", "add", f"{pod_ip}/32", "dev", gateway_end]),
        _in_pid(pid, ["ip", "addr", "add", f"{pod_ip}/32", "dev", sandbox_end]),
        _in_pid(pid, ["ip", "link", "set", sandbox_end, "up"]),
        _in_pid(pid, ["ip", "route", "add", f"{service_ip}/32", "dev", sandbox_end]),
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            # Whichever end is still on the host (a pod deleted meanwhile) takes the pair.
            for end in (sandbox_end, gateway_end):
                subprocess.run(["ip", "link", "del", end], capture_output=True)
            return f"pod network: {' '.join(step)}: {done.stderr.strip()}"
    return None


# The address a test's control plane listens on, on the host's loopback: what a gateway pod
# reaches as the server's Service (sandbox.kubernetes.api).
HOST_IP = "10.250.255.1"


def host_address():
    """Puts HOST_IP on the host's loopback (once per host; never removed: other fakes may
    use it)."""
    done = subprocess.run(["ip", "addr", "add", f"{HOST_IP}/32", "dev", "lo"], capture_output=True, text=True)
    # Another fake may have put it there first (at the same moment, too).
    have = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    if f" {HOST_IP}/32 " not in have.stdout:
        raise SystemExit(f"fake kubelet: ip addr add {HOST_IP}/32 dev lo: {done.stderr.strip()}")


def _link_to_host(pod, pid):
    """A gateway pod's way to the control plane, which is what the gateways' NetworkPolicy
    allows on top of the internet (which the fake does not give): one link to the host, where
    it reaches HOST_IP and nothing else (no default route). A stand-in for the pod network
    and kube-proxy between a gateway pod and the server's Service."""
    if pod["metadata"].get("labels", {}).get("centaur.dev/role") != "gateway":
        return None
    LINKS["n"] += 1
    n = LINKS["n"]
    tag = f"{os.getpid() % 100000}x{n}"
    host_end, pod_end = f"kh{tag}", f"kp{tag}"
    for step in (
        ["ip", "link", "add", host_end, "type", "veth", "peer", "name", pod_end],
        ["ip", "link", "set", pod_end, "netns", str(pid)],
        ["ip", "link", "set", host_end, "up"],
    ):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            # (A pod deleted meanwhile: its end never left the host; the pair goes with it.)
            subprocess.run(["ip", "link", "del", host_end], capture_output=True)
            return f"pod network: {' '.join(step)}: {done.stderr.strip()}"
    # The host's route to the pod is the host's, shared with every other fake running: the
    # address is the first free one of a random few (the route's creation claims it).
    for _ in range(64):
        pod_ip = f"10.251.{random.randrange(256)}.{random.randrange(1, 255)}"
        done = subprocess.run(["ip", "route", "add", f"{pod_ip}/32", "dev", host_end], capture_output=True, text=True)
        if done.returncode == 0:
            break
    else:
        return f"pod network: no free address for the host link: {done.stderr.strip()}"
    steps = [
        _in_pid(pid, ["ip", "addr", "add", f"{pod_ip}/32", "dev", pod_end]),
        _in_pid(pid, ["ip", "link", "set", pod_end, "up"]),
        _in_pid(pid, ["ip", "route", "add", f"{HOST_IP}/32", "dev", pod_end]),
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["ip", "route", "del", f"{pod_ip}/32", "dev", host_end], capture_output=True)
            subprocess.run(["ip", "link", "del", host_end], capture_output=True)
            return f"pod network: {' '.join(step)}: {done.stderr.strip()}"
    return None


def _in(ctx, argv):
    return _in_pid(ctx["proc"].pid, argv)


def _in_pid(pid, argv):
    return ["nsenter", f"--net=/proc/{pid}/ns/net", "--"] + argv


def ready(pod):
    """Waits for the pod's readiness probe (httpGet, inside its network namespace) to pass,
    probing as long as the container runs, as a kubelet does (a slow start on a loaded
    machine is late, not failed); true at once without one. False when the container ends
    first."""
    meta = pod["metadata"]
    ctx = PODS.get((meta["namespace"], meta["name"]))
    c = pod["spec"]["containers"][0]
    probe = c.get("readinessProbe", {}).get("httpGet")
    if ctx is None or probe is None:
        return ctx is not None
    port = probe["port"]
    if isinstance(port, str):
        port = next((p["containerPort"] for p in c.get("ports", []) if p.get("name") == port), 0)
    url = f"http://127.0.0.1:{port}{probe.get('path', '/')}"
    while ctx["proc"].poll() is None:
        check = subprocess.run(
            ["nsenter", f"--net=/proc/{ctx['proc'].pid}/ns/net", "--", "curl", "-sf", "-m", "1", "-o", "/dev/null", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if check.returncode == 0:
            return True
        time.sleep(0.1)
    return False


def start(pod, objects, state_dir, on_exit):
    """Starts pod's container if its image is registered, after its init containers ran to
    success, one by one. Returns (started, error)."""
    c = pod["spec"]["containers"][0]
    if c.get("image") not in IMAGES:
        return False, None
    volumes, err = _volumes(pod, objects, state_dir)
    if err:
        return False, err
    meta = pod["metadata"]
    log = open(os.path.join(state_dir, "pods", f"{meta['namespace']}_{meta['name']}.log"), "ab")
    for init in pod["spec"].get("initContainers", []):
        if init.get("image") not in IMAGES:
            return False, f"init container {init['name']}: image {init.get('image')} is not served"
        ctx, err = prepare(pod, init, volumes, objects)
        if err:
            return False, err
        argv = _argv(init)
        code = _spawn(_netns({}) + _command(ctx, argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log).wait()
        if code != 0:
            return False, f"init container {init['name']} exited with {code}"
    ctx, err = prepare(pod, c, volumes, objects)
    if err:
        return False, err
    ctx["args"] += _resolv_conf(pod, state_dir)
    proc = _spawn(_netns(pod) + _command(ctx, _argv(c)), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    ctx["proc"] = proc
    PODS[(meta["namespace"], meta["name"])] = ctx
    err = _own_netns(proc) or _link_to_gateway(pod, proc.pid) or _link_to_host(pod, proc.pid)
    if err:
        return False, err

    def waiter():
        code = proc.wait()
        on_exit(meta["namespace"], meta["name"], meta["uid"], code)

    threading.Thread(target=waiter, daemon=True).start()
    return True, None


def stop(ns, name):
    """The pod was deleted: its processes end now."""
    ctx = PODS.pop((ns, name), None)
    if ctx is None:
        return
    try:
        ctx["proc"].send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- exec over WebSocket ----


def _recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def _read_frame(sock):
    b1, b2 = _recv_exact(sock, 2)
    opcode, masked, n = b1 & 0x0F, b2 & 0x80, b2 & 0x7F
    if n == 126:
        n = struct.unpack(">H", _recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", _recv_exact(sock, 8))[0]
    if n > 16 << 20:
        raise EOFError
    mask = _recv_exact(sock, 4) if masked else b"\0\0\0\0"
    data = bytearray(_recv_exact(sock, n))
    for i in range(n):
        data[i] ^= mask[i % 4]
    return opcode, bytes(data)


def _frame(opcode, data):
    n = len(data)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + data


def exec_ws(handler, ns, name, query):
    """Answers one exec request on handler (a BaseHTTPRequestHandler): the upgrade, then the
    channels until the process ends. A request it refuses returns (code, reason, message)
    for the caller to answer with a Status."""
    ctx = PODS.get((ns, name))
    if ctx is None or ctx["proc"].poll() is not None:
        return 400, "BadRequest", f"pod {name} has no running container to exec in"
    offered = [p.strip() for p in handler.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    proto = next((p for p in ("v5.channel.k8s.io", "v4.channel.k8s.io") if p in offered), None)
    key = handler.headers.get("Sec-WebSocket-Key")
    if handler.headers.get("Upgrade", "").lower() != "websocket" or not key or proto is None:
        return 400, "BadRequest", "exec needs a WebSocket upgrade with a channel.k8s.io subprotocol"
    argv = query.get("command", [])
    if not argv:
        return 400, "BadRequest", "you must specify at least 1 command"
    want_stdin = query.get("stdin", ["false"])[0] == "true"
    want_stdout = query.get("stdout", ["true"])[0] == "true"
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    handler.send_header("Sec-WebSocket-Protocol", proto)
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True
    proc = subprocess.Popen(
        ["nsenter", f"--net=/proc/{ctx['proc'].pid}/ns/net", "--"] + _command(ctx, argv),
        stdin=subprocess.PIPE if want_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    _pump(handler.connection, proc, proto, want_stdout)
    return None


def _pump(sock, proc, proto, want_stdout):
    out_fd = proc.stdout.fileno()
    client_open = True
    while True:
        ready = [sock] if sock.pending() else select.select([sock, out_fd] if client_open else [out_fd], [], [])[0]
        if out_fd in ready:
            data = os.read(out_fd, 65536)
            if not data:
                break
            if want_stdout:
                sock.sendall(_frame(0x2, b"\x01" + data))
        if sock in ready and client_open:
            try:
                opcode, data = _read_frame(sock)
            except (EOFError, OSError):
                opcode, data = 0x8, b""
            if opcode == 0x8:
                client_open = False
                _close_stdin(proc)
            elif opcode == 0x9:
                sock.sendall(_frame(0xA, data))
            elif opcode == 0x2 and data[:1] == b"\x00" and proc.stdin:
                try:
                    proc.stdin.write(data[1:])
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass
            elif opcode == 0x2 and data == b"\xff\x00" and proto.startswith("v5"):
                _close_stdin(proc)
    code = proc.wait()
    if not client_open:
        return
    if code == 0:
        st = {"metadata": {}, "status": "Success"}
    else:
        st = {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    try:
        sock.sendall(_frame(0x2, b"\x03" + json.dumps(st).encode()))
        sock.sendall(_frame(0x8, struct.pack(">H", 1000)))
    except OSError:
        pass


def _close_stdin(proc):
    if proc.stdin and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
