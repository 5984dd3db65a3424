"""The C extensions: edge.tls_edge._edgetls (the TLS edge's server-side TLS over the system OpenSSL; see its header)
and edge.tls_edge._edgehttp (the HTTP/1.1 proxy path's one-call head parser and rewriter; see its header).

Both are optional: without a C compiler or OpenSSL headers the install still succeeds and the edge falls back to
Python's ssl module (slower; the start-up log says which one serves), and to httptools' per-header callbacks for
every HTTP/1.1 head. Everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("edge.tls_edge._edgetls", ["edge/tls_edge/_edgetls.c"], libraries=["ssl", "crypto"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wno-unused-parameter"]),
                   Extension("edge.tls_edge._edgehttp", ["edge/tls_edge/_edgehttp.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wno-unused-parameter"])])
