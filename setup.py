"""The one C extension: edge.tls_edge._edgetls (the TLS edge's server-side TLS over the system OpenSSL; see its header).

It is optional: without a C compiler or OpenSSL headers the install still succeeds and the edge falls back to
Python's ssl module (slower; the start-up log says which one serves). Everything else is in
pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("edge.tls_edge._edgetls", ["edge/tls_edge/_edgetls.c"], libraries=["ssl", "crypto"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wno-unused-parameter"])])
