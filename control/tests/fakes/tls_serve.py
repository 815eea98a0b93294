"""What the test fakes share: serve an http.server handler over HTTPS with a fresh trustme CA.

serve(handler, directory, *names) writes the CA to DIRECTORY/ca.pem, issues one certificate
for the names, listens on 127.0.0.1:0, prints {"port": N} once listening and serves forever.
"""

import json
import ssl
from http.server import ThreadingHTTPServer

import trustme


def serve(handler, directory, *names):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(f"{directory}/ca.pem")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(ctx)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()
