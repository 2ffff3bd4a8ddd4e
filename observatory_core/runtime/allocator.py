"""Keep freed heap memory in the server process instead of handing it back after every query.

glibc gives the top of its heap back to the kernel once more than M_TRIM_THRESHOLD of it is free,
and serves blocks over M_MMAP_THRESHOLD from fresh mappings; either way the next query's numpy
and polars buffers fault their pages in again. A 30-day hourly series makes ~30 MB of short-lived
arrays: unpacking its sketches took 24 ms with glibc's defaults and 7 ms with these settings.
The cost is that up to TRIM_MB of freed memory stays with the process between requests.
"""

from __future__ import annotations

import ctypes

TRIM_MB = 256
MMAP_MB = 32  # glibc's largest accepted value on 64-bit machines
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from malloc.h


def keep_freed_memory() -> bool:
    """Apply the settings above; False where the C library is not glibc (nothing changes)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_MB << 20)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_MB << 20)
    )
