"""Synapse password provider that checks logins against ma1sd's REST API
(``backend: ma1sd``, the default) or a REST identity store directly, in
ma1sd's REST-store protocol, without ma1sd (``backend: rest``).

The import path ``rest_auth_provider.RestAuthProvider`` is the one the old
single-file provider used, so existing ``homeserver.yaml`` blocks keep working.
"""

__version__ = "1.1.0"

from rest_auth_provider.provider import RestAuthProvider  # noqa: E402

__all__ = ["RestAuthProvider", "__version__"]
