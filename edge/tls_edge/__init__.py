"""The TLS edge: tenant certificates served by SNI, and the HTTP layer behind them.

Imports run one way, top to bottom:

- ``certificates``: PEM/DER helpers, the default certificate, Python ``ssl`` contexts, the process-wide TLS switches;
- ``engine``: the C engine (``_edgetls``, built from ``_edgetls.c`` by ``setup.py``), self-tested at first use;
- ``index``: the SNI index, its LRU of built certificates, the prewarm thread, the bulk load of store rows;
- ``routing``: what the edge answers itself (421 / 404 / placeholder / error pages);
- ``upstream``: the reverse proxy's origin side;
- ``http``: the HTTP/1.1 layer (httptools), TLS driven by the engine or, as the fallback, by Python's ``ssl``;
- ``worker``: the TLS-edge-only process (``workers`` > 1, ``edgecert bench-serve``).
"""
