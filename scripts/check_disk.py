"""Refuse to start `make`'s install when the disk cannot hold it, in one line, before pip starts.

pip on a full disk can fail in the middle of a download and call it a network problem ("Connection
interrupted while downloading", then resume attempts that never move): a CI run failed that way. The
virtual environment takes about 7 GB (torch's CUDA build alone 5.5 GB) and pip unpacks wheels in the
temporary folder first.

Runs on the system Python, before the virtual environment exists: standard library only, 3.9+.
"""
import os
import shutil
import sys
import tempfile

GIB = 2 ** 30
#: What the install needs free: the virtual environment's folder, and pip's temporary folder.
NEEDS_GIB = {"venv": 9.0, "temp": 3.0}


def _existing(path: str) -> str:
    """The nearest folder of ``path`` that exists (the virtual environment's folder may not yet)."""
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def main(venv: str) -> int:
    places = {"venv": _existing(venv), "temp": tempfile.gettempdir()}
    need_by_device: dict = {}
    for kind, path in places.items():
        device = os.stat(path).st_dev
        folders, need = need_by_device.get(device, ([], 0.0))
        need_by_device[device] = (folders + [path], need + NEEDS_GIB[kind])
    for folders, need in need_by_device.values():
        free = shutil.disk_usage(folders[0]).free / GIB
        if free < need:
            print(f"make: {' and '.join(dict.fromkeys(folders))}: {free:.1f} GiB free, the install needs about "
                  f"{need:.0f} GiB (torch alone takes 5.5 GiB); free some space (or set TMPDIR to a folder on "
                  "another disk) and run make again.", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".venv"))
