"""Layer 7, outputs and CI: what a person or a CI job reads.

Reports (``report``: LaTeX, Markdown, figures, PDF), a run written to a folder (``run``), bound
regression against a baseline (``check``, ``junit``), the pytest plugin (``pytest_plugin``),
hypothesis strategies (``strategies``) and ``check_architecture``. The CLI
(``boundcheck/cli.py``) sits on top.
"""
