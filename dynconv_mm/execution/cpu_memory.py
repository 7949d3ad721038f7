"""Keep freed CPU memory in the process, so that large tensors made anew on
every call do not page-fault on every call; and whether the compiled
training ops ask Linux for 2 MiB pages (:func:`huge_pages_wanted`).

glibc's ``malloc`` serves a request above its mmap threshold (128 KiB at
first, raised on the fly to at most 32 MiB) with a fresh ``mmap`` and
returns it to the kernel on ``free``; it also gives the top of the heap
back once more than the trim threshold is free there. A tensor of a few
MiB that is created and freed every call, as a per-sample kernel or an
unfolded input is, then costs a page fault per 4 KiB page each time it is
first written. Measured on the 2-core CPU of ``docs/benchmarks.md`` (batch
1, 512 channels, 3x3 at 7x7): the convolution takes 0.9 ms with its weight
kept, 7.2 ms with a weight formed each call, and 1.1 ms with the same
formed weight once freed memory stays in the heap. A 512-channel 7x7
layer's forward + backward at batch 8 with four kernels and per-sample
kernels takes ~100,000 page faults (400 MB) per step under the default
settings and almost none with memory kept: 9-11x a static convolution's
time against 3.5-3.7x.

:func:`keep_freed_cpu_memory` raises both thresholds (``mallopt``), which
is what ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do from the
environment. The price: the process holds on to the memory it has freed,
up to its peak use, as PyTorch's CUDA allocator does on a GPU. Importing
``dynconv_mm`` calls it unless ``DYNCONV_MM_KEEP_FREED_MEMORY=0`` or the
user set either glibc variable; it does nothing where the C library is
not glibc (another allocator preloaded, musl, macOS, Windows).
"""
import ctypes
import ctypes.util
import os
import platform
from typing import Optional

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Requests up to this size come from the heap and are reused once freed.
MMAP_THRESHOLD = 256 << 20
#: Free memory at the top of the heap kept before any is returned.
TRIM_THRESHOLD = 1 << 30

OPT_OUT_VARIABLE = 'DYNCONV_MM_KEEP_FREED_MEMORY'
GLIBC_VARIABLES = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_')
HUGE_PAGES_VARIABLE = 'DYNCONV_MM_HUGE_PAGES'

_state = dict(applied=False, reason='not called yet')


def _glibc_mallopt() -> Optional[ctypes._CFuncPtr]:
    """glibc's ``mallopt``, or ``None`` where malloc is not glibc's."""
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return None
    mallopt = getattr(libc, 'mallopt', None)
    if mallopt is not None:
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_cpu_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the
    module docstring). Returns whether they are raised.

    Leaves malloc alone when ``DYNCONV_MM_KEEP_FREED_MEMORY`` is ``0`` or
    the user set ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``.
    :func:`cpu_memory_state` says why not.
    """
    if os.environ.get(OPT_OUT_VARIABLE, '1') == '0':
        return _record(False, f'{OPT_OUT_VARIABLE}=0')
    chosen = [name for name in GLIBC_VARIABLES if name in os.environ]
    if chosen:
        return _record(False, f'{chosen[0]} set by the user')
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return _record(False, 'the C library is not glibc')
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return _record(False, 'glibc refused the thresholds')
    return _record(True, f'mmap threshold {MMAP_THRESHOLD >> 20} MiB, '
                   f'trim threshold {TRIM_THRESHOLD >> 20} MiB')


def huge_pages_wanted() -> bool:
    """Whether the compiled sample-GEMM gradient ops (``tiled_gemm``'s
    backward on the CPU) ask Linux to back a bank and its gradient with
    2 MiB pages before walking them (``madvise``: ``MADV_COLLAPSE`` for
    the bank's pages, Linux 6.1+; the gradient, from 2 MiB on, in a mapping
    of whole 2 MiB pages marked ``MADV_HUGEPAGE``, kept once freed for the
    next gradient of its size, up to 1 GiB of them): they read and write a
    few hundred bytes from each of thousands of rows KBs apart, and with 4
    KiB pages nearly every piece missed the TLB (a 512-channel 3x3 layer at
    7x7, batch 8, with six kernels: ~2 of 29 ms). A hint: contents stay, a
    kernel that refuses it changes nothing, and pages already huge cost ~20
    us more per call; the first request for a range copies it once.
    ``DYNCONV_MM_HUGE_PAGES=0`` turns it off, the kept gradients too."""
    return os.environ.get(HUGE_PAGES_VARIABLE, '1') != '0'


def cpu_memory_state() -> dict:
    """``{'applied': bool, 'reason': str}`` of the last call."""
    return dict(_state)


def _record(applied: bool, reason: str) -> bool:
    _state.update(applied=applied, reason=reason)
    return applied
