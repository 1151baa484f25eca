"""Raw image bytes for an ``image_ref``: a file path, or ``h5://<file>#<group>/<row>`` (published CLIBD HDF5).

HDF5 files are opened on first use and kept open per process: a DataLoader worker is a
forked process and must not share its parent's HDF5 handles, so the cache is keyed by pid.
Decoding is not done here (clibd.data.transforms).
"""

from __future__ import annotations

import os
from typing import Any

H5_SCHEME = "h5://"

_h5_files: dict[str, Any] = {}
_h5_pid = os.getpid()


class ImageReadError(OSError):
    """An image that cannot be read; the message names the ref."""


def parse_h5_ref(ref: str) -> tuple[str, str, int]:
    """``h5://<file>#<group>/<row>`` -> (file, group, row)."""
    path, sep, member = ref[len(H5_SCHEME) :].rpartition("#")
    group, _, row = member.rpartition("/")
    if not (sep and path and group and row.isdigit()):
        raise ImageReadError(f"malformed HDF5 image ref {ref!r}; expected h5://<file>#<group>/<row>")
    return path, group, int(row)


def _h5_file(path: str) -> Any:
    global _h5_pid
    if os.getpid() != _h5_pid:  # forked: the parent's handles are not ours to use
        _h5_files.clear()
        _h5_pid = os.getpid()
    handle = _h5_files.get(path)
    if handle is None:
        import h5py

        handle = _h5_files[path] = h5py.File(path, "r")
    return handle


def read_image_bytes(ref: str) -> bytes:
    """The stored (encoded, e.g. JPEG) bytes of one image."""
    if not isinstance(ref, str) or not ref:
        raise ImageReadError(f"no image ref ({ref!r})")
    if not ref.startswith(H5_SCHEME):
        try:
            with open(ref, "rb") as f:
                return f.read()
        except OSError as err:
            raise ImageReadError(f"cannot read image {ref}: {err.strerror or err}") from None
    path, group, row = parse_h5_ref(ref)
    try:
        grp = _h5_file(path)[group]
        length = int(grp["image_mask"][row])
        data = grp["image"][row, :length] if length > 0 else b""
    except (OSError, KeyError, IndexError, ValueError) as err:
        raise ImageReadError(f"cannot read image {ref}: {err}") from None
    if length <= 0:
        raise ImageReadError(f"cannot read image {ref}: no image stored (image_mask is {length})")
    return bytes(data)
