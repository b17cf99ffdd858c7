# SPDX-License-Identifier: Apache-2.0
# An independent reader of capture frames (capture/FORMAT.md) for test_frame.c: decodes a file of
# concatenated frames with Debian's python3-msgpack, checks each frame's keys and types against
# the format, and prints one canonical line per frame for the test to compare.
#   /usr/bin/python3 frame_check.py FILE
import sys

import msgpack

UINT, STR, BIN, BOOL, MAP, LIST, NIL = "uint", "str", "bin", "bool", "map", "list", "nil"

COMMON = {"v": UINT, "id": STR, "type": STR, "gen": UINT, "worker": UINT, "seq": UINT,
          "conn_id": UINT, "ts": UINT, "listener": STR, "client": STR, "dst": STR,
          "upstream": STR}
CONN_CLOSE = {"proto": STR, "reason": STR, "bytes_c2u": UINT, "bytes_u2c": UINT, "open_ts": UINT}
MSG = {"version": STR, "headers": LIST, "body": BIN, "body_size": UINT, "body_truncated": BOOL,
       "chunked": BOOL}
REQ = dict(MSG, method=STR, target=STR)
RESP = dict(MSG, status=UINT, reason=STR, informational=LIST)
FLAGS = {"desync", "upgrade", "headers_truncated", "body_until_close", "no_response", "head"}
TLS = {"event": STR, "side": STR, "sni": STR, "alpn_offered": LIST, "versions_offered": LIST}
TLS_UNWRAPPED = {"version": STR, "cipher": STR, "alpn": STR, "upstream_verify": STR}
TLS_INFO = {"version": STR, "cipher": STR, "sni": STR}
VERSIONS = ["TLS1.0", "TLS1.1", "TLS1.2", "TLS1.3"]


def kind(v):
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return UINT if v >= 0 else "negative int"
    if isinstance(v, str):
        return STR
    if isinstance(v, bytes):
        return BIN
    if isinstance(v, dict):
        return MAP
    if isinstance(v, list):
        return LIST
    if v is None:
        return NIL
    return type(v).__name__


def check_keys(where, obj, want):
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: not a map")
    if set(obj) != set(want):
        raise ValueError(f"{where}: keys {sorted(obj)}, want {sorted(want)}")
    for k, t in want.items():
        if kind(obj[k]) != t:
            raise ValueError(f"{where}.{k}: {kind(obj[k])}, want {t}")


def check_msg(where, m, want):
    check_keys(where, m, want)
    for h in m["headers"]:
        if not (isinstance(h, list) and len(h) == 2 and all(kind(x) == STR for x in h)):
            raise ValueError(f"{where}.headers: {h!r} is not a [name, value] pair of str")
    major, _, minor = m["version"].partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise ValueError(f"{where}.version: {m['version']!r}")
    if len(m["body"]) > m["body_size"]:
        raise ValueError(f"{where}.body: longer than body_size")
    for s in m.get("informational", []):
        if kind(s) != UINT:
            raise ValueError(f"{where}.informational: {s!r}")


def check(f):
    want = dict(COMMON)
    t = f.get("type") if isinstance(f, dict) else None
    if t == "conn":
        want["event"] = STR
        if f.get("event") == "close":
            want.update(CONN_CLOSE)
    elif t == "http":
        want.update(pair=UINT, req=MAP, resp=MAP if f.get("resp") is not None else NIL,
                    timing=MAP, flags=LIST)
        if "desync" in f.get("flags", []):
            want.update(desync_off=UINT, desync_dir=STR)
        if "tls" in f:
            want["tls"] = MAP
    elif t == "tcp":
        want.update(dir=STR, off=UINT, data=BIN)
    elif t == "tls":
        want.update(TLS)
        want.update(TLS_UNWRAPPED if f.get("event") == "unwrapped" else {"reason": STR})
    check_keys("frame", f, want)
    if f["v"] != 1:
        raise ValueError(f"v: {f['v']}")
    if f["id"] != f"{f['gen']:016x}-{f['worker']}-{f['seq']}":
        raise ValueError(f"id: {f['id']!r} does not match gen, worker, seq")
    if f["listener"] not in ("inbound", "outbound"):
        raise ValueError(f"listener: {f['listener']!r}")
    if t == "conn" and f["event"] not in ("open", "close"):
        raise ValueError(f"event: {f['event']!r}")
    if t == "conn" and f["event"] == "close":
        if f["proto"] not in ("http1", "tls", "other", "unknown"):
            raise ValueError(f"proto: {f['proto']!r}")
        if f["reason"] not in ("eof", "reset", "idle_timeout", "connect_failed",
                               "connect_timeout", "drain", "error"):
            raise ValueError(f"reason: {f['reason']!r}")
    if t == "http":
        check_msg("req", f["req"], REQ)
        timing = {"req_start": UINT, "req_end": UINT}
        if f["resp"] is not None:
            check_msg("resp", f["resp"], RESP)
            timing.update(resp_start=UINT, resp_end=UINT)
        check_keys("timing", f["timing"], timing)
        for flag in f["flags"]:
            if flag not in FLAGS:
                raise ValueError(f"flags: {flag!r}")
        if "desync" in f["flags"] and f["desync_dir"] not in ("c2u", "u2c"):
            raise ValueError(f"desync_dir: {f['desync_dir']!r}")
    if t == "tcp" and f["dir"] not in ("c2u", "u2c"):
        raise ValueError(f"dir: {f['dir']!r}")
    if t == "http" and "tls" in f:
        check_keys("tls", f["tls"], TLS_INFO)
        if f["tls"]["version"] not in VERSIONS:
            raise ValueError(f"tls.version: {f['tls']['version']!r}")
    if t == "tls":
        if f["event"] not in ("passthrough", "unwrapped", "failed"):
            raise ValueError(f"event: {f['event']!r}")
        if f["side"] not in ("client", "upstream"):
            raise ValueError(f"side: {f['side']!r}")
        if len(f["alpn_offered"]) > 8 or any(kind(a) != STR for a in f["alpn_offered"]):
            raise ValueError(f"alpn_offered: {f['alpn_offered']!r}")
        offered = f["versions_offered"]
        if any(v not in VERSIONS for v in offered) or offered != sorted(offered, key=VERSIONS.index):
            raise ValueError(f"versions_offered: {offered!r}")
        if f["event"] == "unwrapped" and f["version"] not in VERSIONS:
            raise ValueError(f"version: {f['version']!r}")


def canon(v):
    """The text test_frame.c writes for the same value: maps by sorted key, bytes in hex."""
    k = kind(v)
    if k == MAP:
        return "{" + ",".join(f"{key}:{canon(v[key])}" for key in sorted(v)) + "}"
    if k == LIST:
        return "[" + ",".join(canon(x) for x in v) + "]"
    if k == STR:
        return "s" + v.encode("utf-8", "surrogateescape").hex()
    if k == BIN:
        return "b" + v.hex()
    if k == BOOL:
        return "T" if v else "F"
    if k == NIL:
        return "N"
    if k == UINT:
        return f"i{v}"
    raise ValueError(f"unexpected {k}")


def main():
    with open(sys.argv[1], "rb") as fp:
        data = fp.read()
    # strict_map_key=False: a frame's keys are str anyway, and a non-str key must reach check().
    up = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", strict_map_key=False,
                          max_buffer_size=len(data) + 1)
    up.feed(data)
    n = 0
    for f in up:
        try:
            check(f)
        except (ValueError, KeyError, TypeError) as e:
            print(f"ERROR frame {n}: {e}")
            return 1
        print(canon(f))
        n += 1
    if up.tell() != len(data):
        print(f"ERROR {len(data) - up.tell()} bytes after the last frame")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
