"""``python -m rest_auth_provider.cli``: the same as the ``rest-auth-provider`` command."""

import sys

from rest_auth_provider.cli import main

sys.exit(main())
