"""The command line as TVM users type it: ``--target llvm -mcpu=native -num-cores=2``, unquoted.

argparse would read ``-mcpu=native`` as an option of ours and stop with "unrecognized arguments".
:func:`join_target_options` rewrites such an argv before argparse sees it: the value after
``--target`` and every target option that follows it become the one token
``--target=llvm -mcpu=native -num-cores=2`` (the ``=`` form, so that argparse takes a value
that starts with ``-`` too). The quoted form (``--target "llvm -mcpu=znver3"``) and
``--target=llvm`` pass through unchanged, with any target options after them joined the same way.

A target option is a single-dash word of two or more letters, ``-NAME=VALUE`` or a bare
``-NAME`` (TVM's booleans, e.g. ``-fast-math``): ``target.parse_target`` then validates every
one and names the valid ones, so a mistyped option ends as one clear paragraph and exit 2. What
is never joined: ``--long`` options (ours; unknown ones stay argparse errors), a short option of
ours (``-o``, ``-h``: one letter, or one letter with its value attached such as ``-oDIR``), and
anything after ``--``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

TARGET_OPTION = "--target"

# -NAME or -NAME=VALUE, NAME of two or more characters starting with a letter (TVM's option names:
# mcpu, mattr, mtriple, num-cores, opt-level, fast-math, from_device, ...).
_TARGET_WORD = re.compile(r"-[A-Za-z][A-Za-z0-9_-]+(=.*)?", re.DOTALL)


def is_target_word(token: str, short_options: Iterable[str] = ()) -> bool:
    """Whether ``token`` reads as a TVM target option (see the module docstring) rather than one
    of ``short_options`` (e.g. ``-o``) with its value attached."""
    if not _TARGET_WORD.fullmatch(token):
        return False
    if "=" in token:
        return True  # -NAME=VALUE with a name of two or more letters is no short option of ours
    return not any(token.startswith(short) for short in short_options)


def join_target_options(argv: Sequence[str], short_options: Iterable[str] = ()) -> list[str]:
    """``argv`` with each ``--target VALUE [-OPTION ...]`` (or ``--target=VALUE [-OPTION ...]``)
    joined into one ``--target=VALUE -OPTION ...`` token; every other token unchanged, in order."""
    short_options = tuple(short_options)
    joined: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if token == "--":
            joined.extend(argv[index - 1 :])
            break
        if token == TARGET_OPTION and index < len(argv):
            value = argv[index]
            if value.startswith("-") and not is_target_word(value, short_options):
                joined.append(token)  # no value: argparse reports it
                continue
            words = [value]
            index += 1
        elif token.startswith(TARGET_OPTION + "="):
            words = [token[len(TARGET_OPTION) + 1 :]]
        else:
            joined.append(token)
            continue
        while index < len(argv) and is_target_word(argv[index], short_options):
            words.append(argv[index])
            index += 1
        joined.append(f"{TARGET_OPTION}={' '.join(words)}")
    return joined


__all__ = ["TARGET_OPTION", "is_target_word", "join_target_options"]
