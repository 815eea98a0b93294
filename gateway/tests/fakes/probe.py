"""Sends N requests one after another, GET https://api.test/<PREFIX>-<i>, through the gateway's
CONNECT listener with requests, and prints one JSON line per request saying how it ended:
  ok       200 and the whole body
  cut      the connection broke before the response was complete (or before the CONNECT
           was answered)
  refused  503 audit_unavailable (from the request inside the tunnel, or the CONNECT itself)
  other    anything else (status and text given)

Usage: probe.py PROXY_URL CA_FILE PREFIX N"""

import json
import sys

import requests

proxy, ca, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = requests.Session()
s.proxies = {"https": proxy}
for i in range(n):
    path = f"/{prefix}-{i}"
    out = {"path": path}
    try:
        # verify per request: a session's verify loses to REQUESTS_CA_BUNDLE (requests#3829)
        r = s.get("https://api.test" + path, timeout=10, verify=ca)
        _ = r.content
        if r.status_code == 200:
            out["outcome"] = "ok"
        elif r.status_code == 503 and "audit_unavailable" in r.text:
            out["outcome"] = "refused"
        else:
            out.update(outcome="other", status=r.status_code, text=r.text[:200])
    except requests.exceptions.ProxyError as e:
        # requests reports a refused CONNECT only by its status line.
        out["outcome"] = "refused" if "503" in str(e) else "cut"
        out["text"] = str(e)[:200]
    except requests.exceptions.RequestException as e:
        out.update(outcome="cut", text=str(e)[:200])
        s = requests.Session()
        s.proxies = {"https": proxy}
    print(json.dumps(out), flush=True)
