"""The start-up baseline: the least a bcc program can do to enforce with
bouheki's BPF code. It compiles the same source with the same flags (map
sizes and BTF offsets, computed by the caller and passed as a JSON file),
lets bcc attach the LSM and tracepoint programs, says READY=1 to systemd,
and waits. No configuration, no policy, no D-Bus, no event reader.

    python3 bare_bcc.py CFLAGS.json   (as a Type=notify service)
"""

from __future__ import annotations

import json
import signal
import sys

from bcc import BPF
from systemd import daemon


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    bpf = BPF(src_file=spec["src"].encode(), cflags=spec["cflags"])
    daemon.notify("READY=1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    finally:
        bpf.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
