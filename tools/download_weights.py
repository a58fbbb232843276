#!/usr/bin/env python
"""Download weight files, resumably and atomically, failing at once when offline.

    python tools/download_weights.py --base-url URL --out-dir DIR NAME [NAME ...] [--timeout 30]

Each NAME is fetched from URL/NAME into DIR/NAME through DIR/NAME.part (renamed when
complete, so a killed download never leaves a file that looks whole); a file already in
DIR is kept. The first failure (no network, DNS, HTTP error, a stalled connection past
--timeout) stops with a message naming the URL and the reason, and removes its .part.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


def download(url: str, dest: Path, timeout: float = 30.0) -> int:
    """URL -> dest (atomic); returns the bytes written. Raises OSError with the reason."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as f:
            total = 0
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                total += len(block)
            expected = resp.headers.get("Content-Length")
            if expected is not None and int(expected) != total:
                raise OSError(f"connection closed after {total} of {expected} bytes")
        part.replace(dest)
        return total
    except urllib.error.HTTPError as e:
        raise OSError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise OSError(f"{e.reason} (offline? no route to the host)") from None
    except (socket.timeout, TimeoutError):
        raise OSError(f"no answer within {timeout:g} s") from None
    finally:
        part.unlink(missing_ok=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="+")
    p.add_argument("--base-url", required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds without an answer before giving up")
    a = p.parse_args(argv)
    for name in a.names:
        dest = a.out_dir / name
        if dest.is_file() and dest.stat().st_size > 0:
            print(f"[download] {dest} exists: kept", file=sys.stderr)
            continue
        url = f"{a.base_url.rstrip('/')}/{name}"
        t0 = time.time()
        try:
            size = download(url, dest, a.timeout)
        except OSError as e:
            print(f"[download] error: cannot download {url}: {e}", file=sys.stderr)
            return 1
        print(f"[download] {name}: {size / 1e6:.1f} MB in {time.time() - t0:.1f}s -> {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
