#!/usr/bin/env python3
"""Write the seed corpora under handoff/fuzz/seeds/<target>/ (run from handoff/fuzz).

Seeds are valid inputs of every shape so the fuzzer starts from deep paths:
one frame per message variant, a multi-frame stream, valid journals of every
phase, crash specs of every syntax, and nothing for handoff_env (structured).
"""
import json, os, struct

ID = "5f0c2a1e-9b7d-4c3e-8a21-0d4e5f6a7b8c"
MESSAGES = [
    {"type": "Hello", "role": "incumbent", "pid": 42, "build_id": "dead", "proto_min": 1, "proto_max": 1, "capabilities": ["x"]},
    {"type": "Hello", "role": "successor", "pid": 43, "build_id": "", "proto_min": 1, "proto_max": 2, "capabilities": []},
    {"type": "HelloAck", "proto_version_chosen": 1, "handoff_id": ID},
    {"type": "Refused", "reason": "busy"},
    {"type": "PrepareHandoff", "handoff_id": ID, "successor_pid": 7, "deadline_ms": 300000, "drain_grace_ms": 60000},
    {"type": "Drained", "open_conns_remaining": 0, "accept_closed": True},
    {"type": "SealRequest", "handoff_id": ID},
    {"type": "SealProgress", "shards_sealed": 1, "shards_total": 2, "last_revision": 3},
    {"type": "SealComplete", "handoff_id": ID, "last_revision_per_shard": [1, 2], "data_dir_fingerprint": "abc"},
    {"type": "SealFailed", "handoff_id": ID, "error": "disk", "partial_state": "none"},
    {"type": "Begin", "handoff_id": ID},
    {"type": "Ready", "handoff_id": ID, "listening_on": ["kv"], "healthz_ok": True, "advertised_revision_per_shard": [3]},
    {"type": "Commit", "handoff_id": ID},
    {"type": "Abort", "handoff_id": ID, "reason": "why"},
    {"type": "ResumeAfterAbort", "handoff_id": ID},
    {"type": "Heartbeat", "ts_ms": 5},
]

def frame(msg, version=1):
    payload = json.dumps(msg, separators=(",", ":")).encode()
    return struct.pack("<IH", len(payload), version) + payload

def write(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}", "wb") as f:
        f.write(data)

for i, m in enumerate(MESSAGES):
    write("frame_decode", f"{i:02}-{m['type']}", frame(m))
    # read_message_stream: 8 pattern bytes (read sizes) then the stream.
    write("read_message_stream", f"{i:02}-{m['type']}", bytes([1, 3, 0, 7, 255, 2, 5, 64]) + frame(m))
stream = b"".join(frame(m) for m in MESSAGES)
write("frame_decode", "all", stream)
write("read_message_stream", "all", bytes([255] * 8) + stream)
write("frame_decode", "huge-length", struct.pack("<IH", 0xFFFFFFFF, 1))
write("frame_decode", "truncated", frame(MESSAGES[4])[:20])

for phase in ["negotiating", "draining", "sealing", "awaiting_ready", "committed", "resuming_after_abort"]:
    j = {"v": 1, "handoff_id": ID, "phase": phase, "incumbent_pid": 4242, "successor_pid": 4343, "started_at_unix_ms": 1700000000123}
    write("journal_decode", phase, (json.dumps(j, indent=2) + "\n").encode())
write("journal_decode", "no-successor", json.dumps({"v": 1, "handoff_id": ID, "phase": "negotiating", "incumbent_pid": 1, "successor_pid": None, "started_at_unix_ms": 0}).encode())
write("journal_decode", "future", b'{"v": 7, "whatever": true}')

for i, spec in enumerate([
    "s-after-begin-sent",
    "o-after-seal@3=hang, n-after-ready-sent=delay(25)",
    "o-after-flock-released=exit",
    "s-after-o-hello@1=delay(0),n-after-control-bound",
]):
    write("crash_spec", f"{i:02}", spec.encode())
