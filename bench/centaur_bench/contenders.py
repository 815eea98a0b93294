"""The contenders: our gateway (transparent and CONNECT), direct, hudsucker, squid ssl-bump, mitmproxy."""

import os
import shutil
import subprocess

from .common import HOST, PLACEHOLDER, RELEASE, free_port, sh, wait_port


def gateway_yaml(work, name, origin_port, https_port, tunnel_port, full, new_hosts):
    """A realistic policy (full) or allow-only with audit to /dev/null (bare)."""
    pins = {HOST: f"127.0.0.1:{origin_port}"}
    for i in range(new_hosts):
        pins[f"h{i:04d}.{HOST}"] = f"127.0.0.1:{origin_port}"
    lines = [
        "dns: {enabled: false}",
        "metrics: {listen: null}",
        "proxy:",
        f"  https_listen: 127.0.0.1:{https_port}",
        "  http_listen: null",
        f"  tunnel_listen: 127.0.0.1:{tunnel_port}",
        "  upstream_allow_cidrs: [127.0.0.0/8]",
        "  max_connections: 30000",
        "tls:",
        f"  ca_cert: {work}/mitm-ca.pem",
        f"  ca_key: {work}/mitm-ca.key",
        # new_host measures what issuing a leaf costs, not the limiter that bounds it (its
        # default, 20 new names a second, refuses most of that scenario's requests).
        *(["  leaf_issue_rate: 1000000", "  leaf_issue_burst: 1000000"] if new_hosts else []),
        "upstream:",
        f"  ca_files: [{work}/origin-ca.pem]",
        "  hosts:",
        *[f"    {h}: '{a}'" for h, a in pins.items()],
    ]
    if full:
        lines += ["audit:", f"  file: {{path: {work}/{name}-audit.jsonl, max_size: 1GiB}}",
                  "  durability: batch", "  stdout: false"]
    else:
        lines += ["audit: {stdout: true}"]
    lines += ["transforms:", "  - name: allowlist", "    config:", f"      domains: ['{HOST}', '*.{HOST}']"]
    if full:
        lines.append("      rules:")
        for i in range(120):  # a realistic list the benchmark host sits at the end of
            lines.append(f"        - {{host: 'svc{i}.example.com', methods: [GET, POST], paths: ['/v{i % 3}/*'], ports: [443]}}")
        lines += ["  - name: secrets", "    config:", "      secrets:"]
        for i in range(12):
            lines += [f"        - source: {{type: env, var: BENCH_SECRET_{i}}}",
                      f"          rules: [{{host: 'api{i}.example.com'}}]",
                      f"          replace: {{proxy_value: PLACEHOLDER_{i}, match_headers: [Authorization]}}"]
        lines += ["        - source: {type: env, var: BENCH_ORIGIN_TOKEN}",
                  f"          rules: [{{host: '{HOST}'}}]",
                  f"          replace: {{proxy_value: {PLACEHOLDER}, match_headers: [Authorization]}}",
                  "        - source: {type: env, var: BENCH_ORIGIN_KEY}",
                  f"          rules: [{{host: '{HOST}'}}]",
                  "          inject: {header: x-api-key, formatter: '{{ .Value }}'}"]
    path = f"{work}/{name}.yaml"
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


GATEWAY_ENV = {**{f"BENCH_SECRET_{i}": f"real-secret-value-{i:02d}-0123456789abcdef" for i in range(12)},
               "BENCH_ORIGIN_TOKEN": "real-origin-token-0123456789abcdef",
               "BENCH_ORIGIN_KEY": "real-origin-key-0123456789abcdef"}


class Contender:
    """One way of reaching the origin. `command` gives a fresh instance's argv and ports;
    `mode` is how clients reach it: direct, transparent (dial it, SNI names the origin)
    or connect (an HTTP CONNECT proxy)."""

    def __init__(self, name, label, mode):
        self.name, self.label, self.mode = name, label, mode
        self.proc = None
        self.port = None

    def command(self, ctx):  # -> (argv, port clients dial, env)
        raise NotImplementedError

    def start(self, ctx, procs):
        if self.mode == "direct":
            self.port = ctx.origin_port
            return
        argv, self.port, env = self.command(ctx)
        self.proc = procs.start(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                stderr=open(f"{ctx.work}/{self.name}.log", "ab"))
        wait_port(self.port, self.proc)

    def stop(self, procs):
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None

    def pid(self):
        return self.proc.pid if self.proc else None


class Direct(Contender):
    def __init__(self):
        super().__init__("direct", "direct", "direct")


class Centaur(Contender):
    def __init__(self, name, label, mode, full, binary=None):
        super().__init__(name, label, mode)
        self.full = full
        self.binary = binary or f"{RELEASE}/centaur-gateway"

    def command(self, ctx):
        https, tunnel = free_port(), free_port()
        config = gateway_yaml(ctx.work, self.name, ctx.origin_port, https, tunnel, self.full, ctx.new_hosts)
        port = https if self.mode == "transparent" else tunnel
        return [self.binary, "run", "--config", config], port, GATEWAY_ENV


class Hudsucker(Contender):
    def __init__(self):
        super().__init__("hudsucker", "hudsucker", "connect")

    def command(self, ctx):
        port = free_port()
        w = ctx.work
        return [f"{RELEASE}/hudsucker-peer", f"127.0.0.1:{port}", f"{w}/mitm-ca.pem", f"{w}/mitm-ca.key",
                f"{w}/origin-ca.pem", "127.0.0.1"], port, {}


class Squid(Contender):
    def __init__(self):
        super().__init__("squid", "squid", "connect")
        self.n = 0

    def command(self, ctx):
        port = free_port()
        self.n += 1
        d = f"{ctx.work}/squid{self.n}"
        os.makedirs(d)
        for f in ("mitm-ca.pem", "mitm-ca.key", "origin-ca.pem"):
            shutil.copy(f"{ctx.work}/{f}", d)
        sh(["/usr/lib/squid/security_file_certgen", "-c", "-s", f"{d}/ssl_db", "-M", "16MB"])
        with open(f"{d}/hosts", "w") as f:
            f.write(f"127.0.0.1 {HOST}\n" + "".join(f"127.0.0.1 h{i:04d}.{HOST}\n" for i in range(ctx.new_hosts)))
        with open(f"{d}/squid.conf", "w") as f:
            f.write(f"""http_port 127.0.0.1:{port} ssl-bump tls-cert={d}/mitm-ca.pem tls-key={d}/mitm-ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s {d}/ssl_db -M 16MB
sslcrtd_children 4
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile={d}/origin-ca.pem
http_access allow localhost
http_access deny all
cache deny all
access_log none
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
hosts_file {d}/hosts
max_filedescriptors 65536
workers 1
""")
        sh(["chown", "-R", "proxy:proxy", d])
        return ["squid", "-N", "-f", f"{d}/squid.conf"], port, {}


class Mitmproxy(Contender):
    def __init__(self):
        super().__init__("mitmproxy", "mitmproxy", "connect")

    def command(self, ctx):
        port = free_port()
        return [ctx.mitmdump, "-q", "--listen-host", "127.0.0.1", "-p", str(port), "--set", f"confdir={ctx.work}",
                "--set", f"ssl_verify_upstream_trusted_ca={ctx.work}/origin-ca.pem",
                "--set", "stream_large_bodies=1m"], port, {}


CONTENDERS = {c.name: c for c in (
    Direct(),
    Centaur("centaur-t", "centaur transparent", "transparent", True),
    Centaur("centaur-t-bare", "centaur transparent, allow-only, audit to /dev/null", "transparent", False),
    Centaur("centaur-c", "centaur CONNECT", "connect", True),
    Hudsucker(),
    Squid(),
    Mitmproxy(),
)}
