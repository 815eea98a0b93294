"""Load for the kill -9 tests: THREADS workers send GET https://api.test/k/<worker>-<i> through
the gateway's CONNECT listener with requests, and append each path whose full 200 response
they received to OUT (flushed per line), until the gateway goes away.

Usage: load.py PROXY_URL CA_FILE THREADS OUT"""

import sys
import threading

import requests

proxy, ca, threads, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lock = threading.Lock()
f = open(out, "a")


def worker(w):
    s = requests.Session()
    s.proxies = {"https": proxy}
    failures = 0
    i = 0
    while failures < 3:
        path = f"/k/{w}-{i}"
        i += 1
        try:
            # verify per request: a session's verify loses to REQUESTS_CA_BUNDLE (requests#3829)
            r = s.get("https://api.test" + path, timeout=5, verify=ca)
            _ = r.content  # the whole body
        except Exception:
            failures += 1
            continue
        if r.status_code == 200:
            with lock:
                f.write(path + "\n")
                f.flush()


ts = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
