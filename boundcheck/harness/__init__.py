"""Layer 6, the harness: what runs experiments on top of ``verify``.

Configs (``config``), data sets (``data``), the architecture zoo (``zoo``, ``models``),
training recipes (``training``), one run's training and verification (``pipeline``), sweeps
on a process pool or Dask (``sweep``), the resumable results store (``store``) and the
experiments built on them (``experiments``).
"""
