"""edgecert's service: the API, the TLS edge, HTTP-01 answers, diagnostics, the status page and the scheduler."""

__version__ = "0.1.0"
__all__ = ["__version__"]
