"""Errors of the compile half that a user can fix.

They derive from both :class:`subp_fx.errors.SubpError` (so the CLI prints them as one
paragraph) and :class:`ValueError` (so callers that validate arguments can catch the usual type).
"""

from __future__ import annotations

from subp_fx.errors import SubpError


class CodegenError(SubpError, ValueError):
    """A compile-time input (target, kernel shape, packed weights) is malformed or out of range."""


class TargetError(CodegenError):
    """A target description cannot be turned into a TVM target."""


class ThreadConfigError(CodegenError):
    """A thread count the TVM runtime pool cannot honour."""


class KernelSpecError(CodegenError):
    """A kernel shape, tile or epilogue that the kernel generator cannot build."""


class BlockLayoutError(CodegenError):
    """A weight or block mask that cannot be packed into the uniform 1xN layout."""
