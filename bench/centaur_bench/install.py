"""What the suite needs on the machine: the peers and tools, a PKI for the origin, /etc/hosts names."""

import atexit
import os
import shutil
import sys

from .common import HOST, HOSTS_MARK, MITMPROXY_VERSION, OHA_VERSION, ROOT, TARGET, TOOLS, log, sh

# Smoke runs only show that the suite works, so they build without whole-program
# optimisation (CI: about 9 minutes less on 2 cores). Their figures are never published.
QUICK_BUILD = {"CARGO_PROFILE_RELEASE_LTO": "false", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16",
               "CARGO_PROFILE_RELEASE_DEBUG": "false"}


def install(args):
    smoke = getattr(args, "smoke", False)  # bench/profile has no smoke mode
    env = {**os.environ, **QUICK_BUILD} if smoke else None

    def missing(what):
        if args.no_install:
            raise SystemExit(f"{what} is missing and --no-install was given: run bench/run once without it")
        log(f"installing {what}")

    need_apt = [p for p, binary in (("squid-openssl", "squid"),) if binary in args.contenders and not shutil.which(binary)]
    if need_apt:
        missing(f"apt-get install {' '.join(need_apt)}")
        sh(["apt-get", "install", "-y", "-q", *need_apt], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    oha = shutil.which("oha")
    if oha is None:
        root = os.path.join(TOOLS, "oha-quick" if smoke else "oha")
        oha = os.path.join(root, "bin", "oha")
        if not os.path.exists(oha):
            missing(f"oha {OHA_VERSION} (cargo install, about {3 if smoke else 6} minutes on 2 cores)")
            sh(["cargo", "install", "--locked", "--quiet", "oha", "--version", OHA_VERSION, "--root", root], env=env)
    mitmdump = None
    if "mitmproxy" in args.contenders:
        mitmdump = os.path.join(TOOLS, "venv-mitmproxy", "bin", "mitmdump")
        if not os.path.exists(mitmdump):
            missing(f"mitmproxy {MITMPROXY_VERSION} (pip, in a venv under target/bench)")
            venv = os.path.dirname(os.path.dirname(mitmdump))
            sh([sys.executable, "-m", "venv", venv])
            sh([os.path.join(venv, "bin", "pip"), "install", "-q", f"mitmproxy=={MITMPROXY_VERSION}"])
    log("cargo build --release (centaur-gateway and the bench tools)" + (", without LTO" if smoke else ""))
    sh(["cargo", "build", "--release", "--quiet", "-p", "gateway", "-p", "bench"], cwd=ROOT, env=env)
    if "audit_query" in args.scenarios:
        log("cargo build --release (centaur and gen_audit, for audit_query)")
        sh(["cargo", "build", "--release", "--quiet", "-p", "control"], cwd=ROOT, env=env)
        sh(["cargo", "build", "--release", "--quiet", "-p", "audit", "--example", "gen_audit"], cwd=ROOT, env=env)
    if "hudsucker" in args.contenders:
        log("cargo build --release bench/hudsucker-peer (hudsucker 0.25 from crates.io)")
        sh(["cargo", "build", "--release", "--quiet", "--manifest-path",
            os.path.join(ROOT, "bench", "hudsucker-peer", "Cargo.toml"), "--target-dir", TARGET], env=env)
    return oha, mitmdump


def make_pki(work):
    def key(name):
        sh(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{work}/{name}.key"])

    for ca in ("origin-ca", "mitm-ca"):
        key(ca)
        sh(["openssl", "req", "-x509", "-new", "-key", f"{work}/{ca}.key", "-out", f"{work}/{ca}.pem", "-days", "3",
            "-subj", f"/CN=centaur bench {ca}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    key("origin")
    sh(["openssl", "req", "-new", "-key", f"{work}/origin.key", "-out", f"{work}/origin.csr", "-subj", f"/CN={HOST}"])
    with open(f"{work}/origin.ext", "w") as f:
        f.write(f"subjectAltName=DNS:{HOST},DNS:*.{HOST}\nextendedKeyUsage=serverAuth\n")
    sh(["openssl", "x509", "-req", "-in", f"{work}/origin.csr", "-CA", f"{work}/origin-ca.pem", "-CAkey",
        f"{work}/origin-ca.key", "-CAcreateserial", "-days", "3", "-out", f"{work}/origin.pem", "-extfile", f"{work}/origin.ext"])
    with open(f"{work}/trust.pem", "w") as out:
        for ca in ("origin-ca", "mitm-ca"):
            out.write(open(f"{work}/{ca}.pem").read())
    with open(f"{work}/mitmproxy-ca.pem", "w") as out:  # mitmproxy wants key and cert in one file
        out.write(open(f"{work}/mitm-ca.key").read() + open(f"{work}/mitm-ca.pem").read())


def map_hosts(names):
    """Each name -> 127.0.0.1 for every client and peer, removed again at exit. The lines
    carry a marker, so a run that was killed leaves nothing a later run does not clear."""
    def unmap():
        with open("/etc/hosts") as f:
            lines = [line for line in f if not line.rstrip("\n").endswith(HOSTS_MARK)]
        with open("/etc/hosts", "w") as f:
            f.writelines(lines)

    unmap()
    with open("/etc/hosts") as f:
        text = f.read()
    with open("/etc/hosts", "a") as f:
        f.write(("" if text.endswith("\n") else "\n") + "".join(f"127.0.0.1 {n}  {HOSTS_MARK}\n" for n in names))
    atexit.register(unmap)
