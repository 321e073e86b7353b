"""Layer 2, the numerical engines: what computes, with no theorem or registry knowledge.

Hessian and Gauss–Newton operators (``curvature``), the exact routes for sequential MLPs
(``sequential``, ``sequential_hessian``, ``sequential_products``), Lanczos and trace estimators
(``estimators``), Jacobians (``jacobians``), the finite-perturbation volume ratio (``lvr``), the
T2 closed form (``closed_form``) and the trace-moment SDP (``moment_bound``). Imports only
``boundcheck.core``.
"""
