#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the HTTP capture corpus: NAME.c2u, NAME.u2c (raw bytes) and NAME.case (turns, config).

Each case is a list of turns: (direction, bytes). The files hold each direction's
bytes concatenated; NAME.case says how many bytes each turn takes, in order, so
tests can interleave the directions the way a real exchange does. A `cfg` line
overrides the capture limits for the case. Run from anywhere; it rewrites the
files beside it. NAME.expect (the frames expected) is checked by hand, not made here.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

GET8 = (b"GET /api/v1/items?id=42 HTTP/1.1\r\n"
        b"Host: api.example.com\r\n"
        b"User-Agent: curl/8.5.0\r\n"
        b"Accept: application/json\r\n"
        b"Accept-Encoding: gzip, deflate\r\n"
        b"Accept-Language: en-US,en;q=0.9\r\n"
        b"Cache-Control: no-cache\r\n"
        b"X-Request-Id: 7f3c2a1e-9b4d-4c21-8f2e-0d6a5b1c3e77\r\n"
        b"Connection: keep-alive\r\n\r\n")
OK_JSON = (b"HTTP/1.1 200 OK\r\n"
           b"Content-Type: application/json\r\n"
           b"Content-Length: 27\r\n"
           b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n"
           b'{"id":42,"name":"widget-1"}')


def req(method, target, headers=(), body=b"", version=b"1.1"):
    head = method + b" " + target + b" HTTP/" + version + b"\r\n"
    for name, value in headers:
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n" + body


def resp(status, reason, headers=(), body=b"", version=b"1.1"):
    head = b"HTTP/" + version + b" " + str(status).encode() + b" " + reason + b"\r\n"
    for name, value in headers:
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n" + body


def chunked(*chunks, trailers=()):
    out = b""
    for c in chunks:
        out += b"%x\r\n" % len(c) + c + b"\r\n"
    out += b"0\r\n"
    for name, value in trailers:
        out += name + b": " + value + b"\r\n"
    return out + b"\r\n"


CASES = {}


def case(name, turns, cfg=None):
    CASES[name] = (turns, cfg)


C, U = "c2u", "u2c"
host = (b"Host", b"example.com")

case("get_keepalive", [
    (C, req(b"GET", b"/one", [host])),
    (U, resp(200, b"OK", [(b"Content-Length", b"3")], b"one")),
    (C, req(b"GET", b"/two", [host, (b"Accept", b"*/*")])),
    (U, resp(200, b"OK", [(b"Content-Length", b"3"), (b"X-Dup", b"a"), (b"X-Dup", b"b")],
             b"two")),
])
case("post_content_length", [
    (C, req(b"POST", b"/form", [host, (b"Content-Type", b"application/x-www-form-urlencoded"),
                                (b"Content-Length", b"11")], b"a=1&b=hello")),
    (U, resp(201, b"Created", [(b"Location", b"/form/7"), (b"Content-Length", b"0")])),
])
case("chunked_upload", [
    (C, req(b"PUT", b"/upload", [host, (b"Transfer-Encoding", b"chunked")],
            b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")),
    (U, resp(204, b"No Content")),
])
case("chunked_trailers", [
    (C, req(b"GET", b"/stream", [host, (b"TE", b"trailers")])),
    (U, resp(200, b"OK", [(b"Transfer-Encoding", b"chunked"), (b"Trailer", b"X-Checksum")],
             chunked(b"first,", b"second,", b"third", trailers=[(b"X-Checksum", b"abc123")]))),
])
case("expect_continue", [
    (C, req(b"POST", b"/big", [host, (b"Content-Length", b"10"), (b"Expect", b"100-continue")])),
    (U, resp(100, b"Continue")),
    (C, b"0123456789"),
    (U, resp(200, b"OK", [(b"Content-Length", b"2")], b"ok")),
])
case("early_hints", [
    (C, req(b"GET", b"/page", [host])),
    (U, resp(103, b"Early Hints", [(b"Link", b"</style.css>; rel=preload")]) +
        resp(100, b"Continue") +
        resp(200, b"OK", [(b"Content-Length", b"4")], b"page")),
])
case("pipeline_100", [
    (C, b"".join(req(b"GET", b"/p/%d" % i, [host]) for i in range(100))),
    (U, b"".join(resp(200, b"OK", [(b"Content-Length", b"%d" % len(b"%d" % i))], b"%d" % i)
                 for i in range(100))),
], cfg="max_pending=100")
case("pipeline_overflow", [
    (C, b"".join(req(b"GET", b"/q/%d" % i, [host]) for i in range(6))),
    (U, b"".join(resp(200, b"OK", [(b"Content-Length", b"1")], b"%d" % i) for i in range(6))),
], cfg="max_pending=4")
case("head", [
    (C, req(b"HEAD", b"/file", [host])),
    (U, resp(200, b"OK", [(b"Content-Length", b"1234"), (b"Content-Type", b"text/plain")])),
    (C, req(b"GET", b"/after", [host])),
    (U, resp(200, b"OK", [(b"Content-Length", b"5")], b"after")),
])
case("no_content_204", [
    (C, req(b"DELETE", b"/item/1", [host])),
    (U, resp(204, b"No Content", [(b"X-Trace", b"1")])),
    (C, req(b"GET", b"/item/1", [host])),
    (U, resp(404, b"Not Found", [(b"Content-Length", b"0")])),
])
case("not_modified_304", [
    (C, req(b"GET", b"/logo.png", [host, (b"If-None-Match", b'"v1"')])),
    (U, resp(304, b"Not Modified", [(b"ETag", b'"v1"'), (b"Content-Length", b"5000")])),
    (C, req(b"GET", b"/next", [host])),
    (U, resp(200, b"OK", [(b"Content-Length", b"1")], b"n")),
])
case("until_close", [
    (C, req(b"GET", b"/old", [host], version=b"1.0")),
    (U, resp(200, b"OK", [(b"Content-Type", b"text/plain")],
             b"body delimited by the close\r\nwith CRLF inside\r\n", version=b"1.0")),
])
case("big_body", [
    (C, req(b"POST", b"/blob", [host, (b"Content-Length", b"300")], bytes(range(256)) + b"x" * 44)),
    (U, resp(200, b"OK", [(b"Transfer-Encoding", b"chunked")],
             chunked(b"A" * 50, b"B" * 50, b"C" * 100))),
    (C, req(b"GET", b"/small", [host])),
    (U, resp(200, b"OK", [(b"Content-Length", b"2")], b"ok")),
], cfg="body_limit=64")
case("many_headers", [
    (C, req(b"GET", b"/h", [host] + [(b"X-H%02d" % i, b"value-%02d" % i) for i in range(20)])),
    (U, resp(200, b"OK", [(b"Content-Length", b"0")] +
             [(b"Set-Cookie", b"c%d=%s" % (i, b"v" * 40)) for i in range(6)])),
], cfg="header_limit=200")
case("long_target", [
    (C, req(b"GET", b"/" + b"t" * 300, [host])),
    (U, resp(200, b"R" * 300, [(b"Content-Length", b"0")])),
], cfg="header_limit=100")
case("websocket", [
    (C, req(b"GET", b"/chat", [host, (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                               (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                               (b"Sec-WebSocket-Version", b"13")])),
    (U, resp(101, b"Switching Protocols", [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                                           (b"Sec-WebSocket-Accept",
                                            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]) +
        b"\x81\x05hello"),
    (C, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
    (U, b"\x82\x03\x00\xff\x10"),
    (C, b"\x88\x80\x00\x00\x00\x00"),
])
case("connect_tunnel", [
    (C, req(b"CONNECT", b"db.internal:5432", [(b"Host", b"db.internal:5432")])),
    (U, resp(200, b"Connection established")),
    (C, b"\x16\x03\x01\x00\x05hello"),
    (U, b"\x16\x03\x03\x00\x02hi"),
])
case("upgrade_declined", [
    (C, req(b"GET", b"/ws", [host, (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]) +
        req(b"GET", b"/plain", [host])),
    (U, resp(200, b"OK", [(b"Content-Length", b"2")], b"no") +
        resp(200, b"OK", [(b"Content-Length", b"3")], b"yes")),
])
case("connect_declined", [
    (C, req(b"CONNECT", b"blocked:443", [(b"Host", b"blocked:443")])),
    (U, resp(407, b"Proxy Authentication Required", [(b"Proxy-Authenticate", b"Basic"),
                                                     (b"Content-Length", b"0")])),
    (C, req(b"CONNECT", b"blocked:443", [(b"Host", b"blocked:443"),
                                          (b"Proxy-Authorization", b"Basic dTpw")])),
    (U, resp(200, b"OK")),
    (C, b"tunnel-bytes"),
])
case("redis", [
    (C, b"*1\r\n$4\r\nPING\r\n"),
    (U, b"+PONG\r\n"),
    (C, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
    (U, b"$-1\r\n"),
])
case("smtp_server_first", [
    (U, b"220 mail.example.com ESMTP ready\r\n"),
    (C, b"EHLO client.example.com\r\n"),
    (U, b"250-mail.example.com\r\n250 STARTTLS\r\n"),
    (C, b"QUIT\r\n"),
    (U, b"221 bye\r\n"),
])
# A real ClientHello (curl's, from ../tls): one tls frame, the ciphertext after it not captured.
with open(os.path.join(HERE, "..", "tls", "curl_sni_alpn.bin"), "rb") as hello:
    CURL_HELLO = hello.read()
case("tls_client_hello", [
    (C, CURL_HELLO),
    (U, b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"),
    (C, b"\x17\x03\x03\x00\x05hello"),
])
# A ClientHello whose record promises more than comes before the server answers.
case("tls_truncated_hello", [
    (C, b"\x16\x03\x01\x00\x31\x01\x00\x00\x2d\x03\x03" + bytes(range(32)) + b"\x00\x00\x02\x13\x01\x01\x00"),
    (U, b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"),
])
case("garbage_after_pair", [
    (C, req(b"GET", b"/ok", [host])),
    (U, resp(200, b"OK", [(b"Content-Length", b"2")], b"ok")),
    (C, b"\x00\x01\x02 not http at all\r\n\r\n"),
    (U, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
])
case("garbage_response", [
    (C, req(b"GET", b"/x", [host])),
    (U, b"SSH-2.0-OpenSSH_9.2\r\n"),
    (C, b"more client bytes"),
])
case("no_response", [
    (C, req(b"GET", b"/lost", [host]) + req(b"POST", b"/lost2", [host, (b"Content-Length", b"4")],
                                            b"da")),
], cfg=None)
case("partial_response", [
    (C, req(b"GET", b"/cut", [host])),
    (U, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"),
])
case("skip_body", [
    (C, req(b"POST", b"/up", [host, (b"Content-Length", b"200")], b"u" * 200)),
    (U, resp(200, b"OK", [(b"Content-Length", b"150")], b"d" * 150)),
    (C, req(b"GET", b"/next", [host])),
    (U, resp(200, b"OK", [(b"Content-Length", b"4")], b"next")),
], cfg="body_limit=16")
case("until_close_big", [
    (C, req(b"GET", b"/old", [host], version=b"1.0")),
    (U, resp(200, b"OK", [], b"z" * 100, version=b"1.0")),
], cfg="body_limit=10")

SMUGGLE = {
    "smuggle_cl_te": [host, (b"Content-Length", b"6"), (b"Transfer-Encoding", b"chunked")],
    "smuggle_te_chunked_chunked": [host, (b"Transfer-Encoding", b"chunked, chunked")],
    "smuggle_te_chunked_gzip": [host, (b"Transfer-Encoding", b"chunked, gzip")],
    "smuggle_te_gzip": [host, (b"Transfer-Encoding", b"gzip")],
    "smuggle_dup_cl": [host, (b"Content-Length", b"5"), (b"Content-Length", b"6")],
    "smuggle_cl_plus": [host, (b"Content-Length", b"+5")],
    "smuggle_te_space_colon": [host, (b"Transfer-Encoding ", b"chunked")],
    "smuggle_nul_value": [host, (b"X-Evil", b"a\x00b")],
    "smuggle_empty_name": [host, (b"", b"chunked")],
    "smuggle_cr_value": [host, (b"X-Evil", b"a\rb")],
}
SMUGGLED = req(b"GET", b"/admin", [host])
for name, headers in SMUGGLE.items():
    case(name, [
        (C, req(b"POST", b"/", headers, b"0\r\n\r\n" + SMUGGLED)),
        (U, resp(400, b"Bad Request", [(b"Content-Length", b"0"), (b"Connection", b"close")])),
    ])
case("smuggle_chunk_bare_lf", [
    (C, req(b"POST", b"/", [host, (b"Transfer-Encoding", b"chunked")],
            b"5\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    (U, resp(400, b"Bad Request", [(b"Content-Length", b"0"), (b"Connection", b"close")])),
])
case("smuggle_cr_end_of_headers", [
    (C, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\rX\r\n\r\nhello" + SMUGGLED),
    (U, resp(400, b"Bad Request", [(b"Content-Length", b"0"), (b"Connection", b"close")])),
])
case("smuggle_chunk_size_cr", [
    (C, req(b"POST", b"/", [host, (b"Transfer-Encoding", b"chunked")],
            b"5\rXhello\r\n0\r\n\r\n" + SMUGGLED)),
    (U, resp(400, b"Bad Request", [(b"Content-Length", b"0"), (b"Connection", b"close")])),
])


def main():
    for name, (turns, cfg) in CASES.items():
        data = {C: b"", U: b""}
        lines = []
        if cfg:
            lines.append("cfg " + cfg)
        for d, b in turns:
            data[d] += b
            lines.append("%s %d" % (d, len(b)))
        for d in (C, U):
            with open(os.path.join(HERE, name + "." + d), "wb") as f:
                f.write(data[d])
        with open(os.path.join(HERE, name + ".case"), "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
