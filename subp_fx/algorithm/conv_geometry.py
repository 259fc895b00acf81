"""Conv geometry shared by the eager modules and the compiler: (h, w) pairs and explicit padding.

Pure Python. One definition, so the eager reference (``BlockSparseConv2d``) and the kernels agree
on what a padding argument means.
"""

from __future__ import annotations


def int_pair(value, what: str, minimum: int | None = None, error: type[Exception] = ValueError) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, as torch's conv arguments) as an (h, w) pair.

    Raises ``error`` naming ``what`` when it is not, or when an entry is below ``minimum``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    else:
        pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    valid = len(pair) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
    if not valid or (minimum is not None and any(v < minimum for v in pair)):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise error(f"{what} must be an integer{bound} or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def explicit_padding(padding, kernel_size: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int] | None:
    """Symmetric (ph, pw) for torch's conv ``padding`` argument (ints, 'valid' or 'same'), or
    None when it is asymmetric ('same' with an even dilated kernel extent)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        extents = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return tuple(extent // 2 for extent in extents) if all(extent % 2 == 0 for extent in extents) else None
    return int_pair(padding, "padding")
