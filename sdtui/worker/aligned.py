"""Weights in aligned memory, without holding a mapped file's pages beside their copies.

CPU kernels pick their path by the weights' alignment, and a diffusers folder's weights are views
into its files at whatever offset each sits: unaligned, they give other float rounding than the
same weights read into their own memory. So every format runs from aligned memory: each
unaligned weight is copied. The copy reads the mapped pages, which then count in the worker's
RSS beside the copy (a Klein 4B folder peaked at 2.05x its transformer file); each copied
weight's pages are handed back to the kernel as soon as it is copied.
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any

import torch

ALIGNMENT = 64
MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages; never discards data (see _hand_back)
_LIBC: Any = None


def align_weights(pipe: Any) -> None:
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            for kind in ("_parameters", "_buffers"):
                for tensor in getattr(module, kind).values():
                    if tensor is None or not tensor.data_ptr() % ALIGNMENT:
                        continue
                    old = tensor.data
                    tensor.data = old.clone()
                    if old.device.type == "cpu" and old.is_contiguous():
                        _hand_back(old.data_ptr(), old.numel() * old.element_size())


def _hand_back(address: int, size: int) -> None:
    """Reclaim the whole pages inside [address, address + size). A clean page of a mapped file
    leaves this process (read from the file again should anything touch it); a page of anonymous
    memory, or one written to, is at most swapped out (without swap, as on the instances, it
    stays): PAGEOUT only reclaims, so no weight another tensor still shares is ever lost."""
    global _LIBC
    start = -(-address // mmap.PAGESIZE) * mmap.PAGESIZE
    end = (address + size) // mmap.PAGESIZE * mmap.PAGESIZE
    if end <= start:
        return
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    # A kernel without PAGEOUT (before 5.4) answers EINVAL: the pages stay, as they did.
    _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_PAGEOUT)
