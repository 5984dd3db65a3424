"""The C extensions: edge.tls_edge._edgetls (the TLS edge's server-side TLS over the system OpenSSL; see its header),
edge.tls_edge._edgeh2 (HTTP/2 over the system libnghttp2; see its header) and edge.tls_edge._edgehttp (the HTTP/1.1
proxy path's one-call head parser and rewriter; see its header).

All are optional: without a C compiler or OpenSSL headers the install still succeeds and the edge falls back to
Python's ssl module (slower; the start-up log says which one serves); without libnghttp2's headers the edge does not
offer HTTP/2 (ALPN offers http/1.1 only); without _edgehttp every HTTP/1.1 head goes through httptools' per-header
callbacks. Everything else is in pyproject.toml."""
from setuptools import Extension, setup

_FLAGS = ["-O2", "-Wall", "-Wno-unused-parameter"]
setup(ext_modules=[Extension("edge.tls_edge._edgetls", ["edge/tls_edge/_edgetls.c"], libraries=["ssl", "crypto"], optional=True,
                             extra_compile_args=_FLAGS),
                   Extension("edge.tls_edge._edgeh2", ["edge/tls_edge/_edgeh2.c"], libraries=["nghttp2"], optional=True,
                             extra_compile_args=_FLAGS),
                   Extension("edge.tls_edge._edgehttp", ["edge/tls_edge/_edgehttp.c"], optional=True,
                             extra_compile_args=_FLAGS)])
