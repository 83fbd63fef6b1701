"""How much memory an in-memory data cache may take.

The DetectNet_v2 image cache (``dataset_config.image_cache_mb``) and the MaskRCNN decoded-record
cache (``data_config.decoded_cache_mb``) are made only when their content fits in the spec's
bound and in a quarter of the physical memory available when the pipeline is built.
"""

from __future__ import annotations

__all__ = ["available_memory", "cache_budget"]

#: Share of the available memory a cache may take.
AVAILABLE_SHARE = 0.25


def available_memory() -> int | None:
    """Bytes of physical memory available now (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cache_budget(limit_mib: int) -> int:
    """Bytes a cache may hold: ``limit_mib`` MiB, and at most a quarter of the available memory.

    Args:
        limit_mib: the spec's bound in MiB; 0 (or less) means no cache.

    Returns:
        The budget in bytes (0: make no cache).
    """
    budget = max(int(limit_mib), 0) * 2**20
    available = available_memory()
    if available is not None:
        budget = min(budget, int(available * AVAILABLE_SHARE))
    return budget
