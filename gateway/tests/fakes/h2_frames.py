"""Malformed HTTP/2 requests (RFC 9113 section 8), crafted frame by frame with the `h2`
library with its own checks turned off, one connection per case.

Usage: h2_frames.py HOST PORT CA_FILE SERVER_NAME
Prints one JSON line per case: the status the gateway answered (if any), the stream reset
code, the GOAWAY code, and whether the connection closed.
"""

import json
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events

HOST, PORT, CA, NAME = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def base(path, method="GET", authority=None):
    return [
        (":method", method),
        (":scheme", "https"),
        (":authority", authority or NAME),
        (":path", path),
    ]


def case_list():
    """(name, headers, data frames, end_stream after headers)"""
    p = lambda name: "/h2/" + name  # noqa: E731
    return [
        ("control", base(p("control")), [], True),
        ("control_body", base(p("control_body"), "POST") + [("content-length", "5")], [b"hello"], False),
        ("uppercase_name", base(p("uppercase_name")) + [("X-Upper", "a")], [], True),
        ("pseudo_after_regular", [(":method", "GET"), ("x-a", "b"), (":scheme", "https"),
                                  (":authority", NAME), (":path", p("pseudo_after_regular"))], [], True),
        ("unknown_pseudo", base(p("unknown_pseudo")) + [(":foo", "bar")], [], True),
        ("duplicate_path", base(p("duplicate_path")) + [(":path", "/h2/other")], [], True),
        ("missing_method", [(":scheme", "https"), (":authority", NAME), (":path", p("missing_method"))], [], True),
        ("missing_path", [(":method", "GET"), (":scheme", "https"), (":authority", NAME)], [], True),
        ("empty_path", base(""), [], True),
        ("response_pseudo", base(p("response_pseudo")) + [(":status", "200")], [], True),
        ("connection_header", base(p("connection_header")) + [("connection", "keep-alive")], [], True),
        ("transfer_encoding", base(p("transfer_encoding"), "POST") + [("transfer-encoding", "chunked")],
         [b"5\r\nhello\r\n0\r\n\r\n"], False),
        ("te_not_trailers", base(p("te_not_trailers")) + [("te", "gzip")], [], True),
        ("crlf_in_value", base(p("crlf_in_value")) + [("x-a", "b\r\nTransfer-Encoding: chunked")], [], True),
        ("nul_in_value", base(p("nul_in_value")) + [("x-a", "b\x00c")], [], True),
        ("space_in_name", base(p("space_in_name")) + [("x a", "b")], [], True),
        ("colon_in_name", base(p("colon_in_name")) + [("x:a", "b")], [], True),
        ("crlf_in_path", base(p("crlf_in_path") + " HTTP/1.1\r\nHost: evil.test\r\nX: y"), [], True),
        ("space_in_path", base(p("space_in_path") + " x"), [], True),
        ("cl_more_than_data", base(p("cl_more_than_data"), "POST") + [("content-length", "10")], [b"hello"], False),
        ("cl_less_than_data", base(p("cl_less_than_data"), "POST") + [("content-length", "2")], [b"hello"], False),
        ("cl_twice", base(p("cl_twice"), "POST") + [("content-length", "5"), ("content-length", "6")], [b"hello"], False),
        ("cl_not_a_number", base(p("cl_not_a_number"), "POST") + [("content-length", "5x")], [b"hello"], False),
        ("connect_with_path", [(":method", "CONNECT"), (":scheme", "https"), (":authority", "evil.test:443"),
                               (":path", p("connect_with_path"))], [], False),
        ("connect_plain", [(":method", "CONNECT"), (":authority", "evil.test:443")], [], False),
        ("connect_extended", [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                              (":authority", NAME), (":path", p("connect_extended"))], [], False),
        ("authority_vs_host", base(p("authority_vs_host")) + [("host", "evil.test")], [], True),
        ("authority_not_sni", base(p("authority_not_sni"), authority="evil.test"), [], True),
        ("authority_userinfo", base(p("authority_userinfo"), authority="user@" + NAME), [], True),
    ]


def run(name, headers, frames, end_stream):
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection((HOST, PORT), timeout=5)
    sock = ctx.wrap_socket(raw, server_hostname=NAME)
    assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    conn.send_headers(1, headers, end_stream=end_stream)
    for i, data in enumerate(frames):
        conn.send_data(1, data, end_stream=(i == len(frames) - 1))
    sock.sendall(conn.data_to_send())
    out = {"case": name, "status": None, "reset": None, "goaway": None, "closed": False, "body": ""}
    done = False
    while not done:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ssl.SSLError, ConnectionError):
            out["closed"] = True
            break
        if not chunk:
            out["closed"] = True
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                out["status"] = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                out["body"] += ev.data.decode("utf-8", "replace")
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
            elif isinstance(ev, h2.events.StreamReset):
                out["reset"] = int(ev.error_code)
                done = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                out["goaway"] = int(ev.error_code)
                done = True
        data = conn.data_to_send()
        if data:
            sock.sendall(data)
    sock.close()
    out["body"] = out["body"][:200]
    return out


for case in case_list():
    print(json.dumps(run(*case)), flush=True)
