"""Synapse password provider that checks logins against ma1sd's REST API
(``backend: ma1sd``, the default) or a REST identity store directly, in
ma1sd's REST-store protocol, without ma1sd (``backend: rest``).

The import path ``rest_auth_provider.RestAuthProvider`` is the one the old
single-file provider used, so existing ``homeserver.yaml`` blocks keep working.
It is loaded on first use (Synapse's module loader does ``getattr`` on this
package), so that the command line tool and the config parser import without
Synapse.
"""

from typing import TYPE_CHECKING, Any

__version__ = "1.1.0"

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from rest_auth_provider.provider import RestAuthProvider

__all__ = ["RestAuthProvider", "__version__"]


def __getattr__(name: str) -> Any:
    """Returns the provider class for ``RestAuthProvider`` (importing Synapse);
    raises AttributeError for any other missing name."""
    if name == "RestAuthProvider":
        from rest_auth_provider.provider import RestAuthProvider

        globals()[name] = RestAuthProvider  # looked up here once only
        return RestAuthProvider
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
