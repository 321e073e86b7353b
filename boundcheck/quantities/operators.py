"""The context's Hessian operator (built once per context): the engine's operator for the
subject, with products in its ``product_dtype``, under ``Budget.memory_bytes``, and over a
distributed subject's ranks all-reduced with weights n_r/n."""

from __future__ import annotations

from boundcheck.engines.data_parallel import DataParallelOperator
from boundcheck.engines.working_precision import working_precision_operator
from boundcheck.quantities.registry import Context, distributed


def hessian_operator_of(ctx: Context):
    """The subject's Hessian operator, built once per context: products in the subject's
    ``product_dtype`` (:mod:`boundcheck.engines.working_precision`), under the memory budget,
    and over a distributed subject's ranks all-reduced with weights n_r/n
    (:class:`DataParallelOperator`)."""
    return ctx.artifact("hessian.operator", lambda: over_ranks(
        ctx, working_precision_operator(ctx.subject, ctx.budget.memory_bytes),
        DataParallelOperator))


def over_ranks(ctx: Context, local, data_parallel):
    """``local`` (this rank's operator), wrapped in ``data_parallel`` (whose results are
    all-reduced with weights n_r/n) when the subject is distributed."""
    if distributed(ctx.subject):
        return data_parallel(local, ctx.subject.n, ctx.subject.process_group)
    return local
