"""A small OTLP/HTTP logs receiver for the tests, decoding with the OpenTelemetry project's
own protobuf bindings (opentelemetry-proto), not with anything of ours.

Usage: otlp.py DIR. Prints {"port": N} once listening. Each log record received is appended
to DIR/logs.jsonl as {"content_type", "resource", "scope", "record"} (protobuf JSON mapping),
so tests can check exactly what a collector would see. POST /admin/fail makes the next
requests answer 503 until POST /admin/ok."""

import gzip
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

DIR = sys.argv[1]
LOCK = threading.Lock()
STATE = {"fail": False}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path.startswith("/admin/"):
            STATE["fail"] = self.path == "/admin/fail"
            return self.reply(200)
        if self.path != "/v1/logs":
            return self.reply(404)
        if STATE["fail"]:
            return self.reply(503)
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        ctype = self.headers.get("content-type", "")
        req = ExportLogsServiceRequest()
        try:
            if ctype == "application/x-protobuf":
                req.ParseFromString(body)
            elif ctype == "application/json":
                json_format.Parse(body, req)
            else:
                return self.reply(415)
        except Exception as e:  # a malformed export is the exporter's bug: say so
            return self.reply(400, str(e).encode())
        with LOCK, open(os.path.join(DIR, "logs.jsonl"), "a") as f:
            for rl in req.resource_logs:
                resource = {a.key: a.value.string_value for a in rl.resource.attributes}
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        f.write(json.dumps({
                            "content_type": ctype,
                            "auth": self.headers.get("authorization"),
                            "resource": resource,
                            "scope": sl.scope.name,
                            "record": json_format.MessageToDict(rec),
                        }) + "\n")
        self.reply(200, req.SerializeToString()[:0])


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
