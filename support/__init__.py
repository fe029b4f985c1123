"""Shared, non-test code that the tests, the benchmark, the demo and the packaging check import.

* ``fake_ma1sd``, ``fake_reststore``: the stand-in backends (ma1sd, a REST
  identity store) over real HTTP;
* ``harness``: real Synapse processes; ``matrix_client``: a client for them;
* ``services``: private PostgreSQL and Redis servers;
* ``certs``: throwaway TLS certificates;
* ``memory_reactor``: a memory reactor with a clock and a name resolver;
* ``twisted_helpers``: typed pytest_twisted decorators and Twisted's in-memory transport;
* ``demo``: the demo homeserver (``scripts/demo``).

Nothing here holds a test, and none of it is shipped in the wheel (setup.cfg
packages ``rest_auth_provider`` only). It is imported from the repository
root, which pytest, ``python -m bench.run``, ``scripts/demo`` and
``scripts/check-packaging.py`` each put on ``sys.path``.
"""
