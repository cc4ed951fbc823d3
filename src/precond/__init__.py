"""precond: preconditioned optimization that lets the matrix do the work."""

__version__ = "0.1.0"
