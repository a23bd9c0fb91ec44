#!/usr/bin/env python3
"""Turn on dockerd's containerd image store in daemon.json (scripts/setup-host.sh runs it).

    merge-daemon-json.py /etc/docker/daemon.json

Merges ``"features": {"containerd-snapshotter": true}`` into the file: every other setting
stays as it is, the old file is kept as ``daemon.json.archlift-backup``, and the new one is
written atomically. Prints ``unchanged``, ``merged`` or ``written``; a file that is not a JSON
object is left alone and named (exit 1).
"""

from __future__ import annotations

import json
import os
import shutil
import sys


def merge(path: str) -> str:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise SystemExit(f"{path} is not valid JSON ({e}); fix it, then run this again") from None
    if not isinstance(config, dict):
        raise SystemExit(f"{path} does not hold a JSON object; fix it, then run this again")
    features = config.setdefault("features", {})
    if not isinstance(features, dict):
        raise SystemExit(f"{path}: 'features' is not an object; fix it, then run this again")
    if features.get("containerd-snapshotter") is True:
        return "unchanged"
    features["containerd-snapshotter"] = True
    if text:
        shutil.copy2(path, path + ".archlift-backup")
    tmp = path + ".archlift-new"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return "merged" if text else "written"


if __name__ == "__main__":
    print(merge(sys.argv[1]))
