"""Rewriting the outermost statements that match a pattern, the containers above them rebuilt."""

from __future__ import annotations

from collections.abc import Callable

from tvm import tirx


def rewrite_outermost(stmt, matches: Callable[[object], bool], rewrite: Callable[[object], object]):
    """``stmt`` with every statement ``matches`` accepts (and that no accepted one contains)
    replaced by ``rewrite`` of it; the containers on the way (sequences, attributes, loops,
    conditions) rebuilt only where something below changed. The passes' shared walk."""
    if matches(stmt):
        return rewrite(stmt)
    if isinstance(stmt, tirx.SeqStmt):
        seq = [rewrite_outermost(child, matches, rewrite) for child in stmt.seq]
        return stmt if all(new.same_as(old) for new, old in zip(seq, stmt.seq)) else tirx.SeqStmt(seq)
    if isinstance(stmt, tirx.AttrStmt):
        body = rewrite_outermost(stmt.body, matches, rewrite)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body)
    if isinstance(stmt, tirx.For):
        body = rewrite_outermost(stmt.body, matches, rewrite)
        if body.same_as(stmt.body):
            return stmt
        return tirx.For(
            stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding, stmt.annotations, stmt.step
        )
    if isinstance(stmt, tirx.IfThenElse):
        then_case = rewrite_outermost(stmt.then_case, matches, rewrite)
        else_case = None if stmt.else_case is None else rewrite_outermost(stmt.else_case, matches, rewrite)
        if then_case.same_as(stmt.then_case) and (else_case is None or else_case.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then_case, else_case)
    return stmt


__all__ = ["rewrite_outermost"]
