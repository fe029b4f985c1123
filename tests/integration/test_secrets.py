"""No password reaches any log line or console output, at DEBUG for every logger.

Runs after every other integration test (see conftest), over the output of
every Synapse the session started (``SERVERS``: both shared servers, and the
hardened, secure, TLS, worker and load ones where their tests ran), with
whichever backend this run uses.
"""

from tests.integration.conftest import PASSWORDS, SERVERS, Homeserver


def test_no_password_in_any_synapse_output(defaults_hs: Homeserver, sync_hs: Homeserver) -> None:
    # Make sure at least one login went through each server before checking.
    for hs in (defaults_hs, sync_hs):
        user = hs.new_user("secret")
        hs.client.login_ok(user.user_id, user.password)
        hs.client.login(user.user_id, user.password + "-wrong")
    assert len(PASSWORDS) >= 4
    for hs in (defaults_hs, sync_hs):
        text = hs.server.log_text()
        assert "DEBUG" in text and len(text) > 10000
    for server in SERVERS:
        text = server.log_text()
        leaked = [p for p in PASSWORDS if p in text]
        assert leaked == [], "passwords found in %s's output (%s)" % (server.name, server.workdir)
