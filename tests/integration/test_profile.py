"""Display names and 3PIDs kept in step with ma1sd, per policy."""

from support.harness import synapse_version
from support.matrix_client import wait_for
from tests.integration.conftest import Homeserver

# Synapse 1.69+ tells every process of a deactivation, so only there does the
# module remember a profile found in step (profile_recheck_interval).
REMEMBERS_PROFILES = synapse_version() >= (1, 69, 0)


def test_display_name_change_reaches_profile_and_rooms(sync_hs: Homeserver) -> None:
    hs = sync_hs
    user = hs.new_user("mia", display_name="Mia Old")
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    room_id = hs.client.create_room(token)
    assert hs.client.member_event(token, room_id, user.user_id)["displayname"] == "Mia Old"

    user.display_name = "Mia New"
    hs.client.login_ok(user.user_id, user.password)

    assert hs.client.displayname(user.user_id) == "Mia New"
    # Synapse updates the member events in the background.
    member_name = wait_for(lambda: hs.client.member_event(token, room_id, user.user_id)["displayname"] == "Mia New")
    assert member_name, hs.client.member_event(token, room_id, user.user_id)


def test_unchanged_display_name_is_not_written_again(sync_hs: Homeserver) -> None:
    hs = sync_hs
    user = hs.new_user("nils", display_name="Nils")
    hs.client.login_ok(user.user_id, user.password)
    mark = hs.mark()
    hs.client.login_ok(user.user_id, user.password)
    assert not any("Updated the display name" in line for line in hs.new_log_lines(mark))


def test_display_name_is_kept_on_later_logins_by_default(defaults_hs: Homeserver) -> None:
    hs = defaults_hs
    user = hs.new_user("olga", display_name="Olga First")
    hs.client.login_ok(user.user_id, user.password)
    user.display_name = "Olga Second"
    hs.client.login_ok(user.user_id, user.password)
    assert hs.client.displayname(user.user_id) == "Olga First"


def test_replace_policy_removes_3pids_ma1sd_dropped(sync_hs: Homeserver) -> None:
    hs = sync_hs
    user = hs.new_user("pia", emails=("pia@example.org", "pia.old@example.org"), msisdns=("+353 85 123 4567",))
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    assert hs.client.threepid_set(token) == {
        ("email", "pia@example.org"),
        ("email", "pia.old@example.org"),
        ("msisdn", "353851234567"),
    }
    user.three_pids = [{"medium": "email", "address": "pia@example.org"}]
    hs.client.login_ok(user.user_id, user.password)
    assert hs.client.threepid_set(token) == {("email", "pia@example.org")}


def test_without_replace_policy_3pids_are_only_added(defaults_hs: Homeserver) -> None:
    hs = defaults_hs
    user = hs.new_user("quinn", emails=("quinn@example.org",))
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    user.three_pids = [{"medium": "email", "address": "quinn.new@example.org"}]
    hs.client.login_ok(user.user_id, user.password)
    assert hs.client.threepid_set(token) == {("email", "quinn@example.org"), ("email", "quinn.new@example.org")}


def test_a_3pid_deleted_in_synapse_comes_back_at_the_next_login_without_recheck_interval(sync_hs: Homeserver) -> None:
    hs = sync_hs  # profile_recheck_interval: 0
    user = hs.new_user("rita", emails=("rita@example.org",))
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    hs.client.delete_threepid(token, "email", "rita@example.org")
    assert hs.client.threepid_set(token) == set()
    hs.client.login_ok(user.user_id, user.password)
    assert hs.client.threepid_set(token) == {("email", "rita@example.org")}


def test_within_the_recheck_interval_a_repeat_login_leaves_the_3pids_alone(defaults_hs: Homeserver) -> None:
    hs = defaults_hs  # profile_recheck_interval: 300 (the default)
    user = hs.new_user("sven", emails=("sven@example.org",))
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    hs.client.delete_threepid(token, "email", "sven@example.org")
    mark = hs.mark()
    hs.client.login_ok(user.user_id, user.password)
    if not REMEMBERS_PROFILES:
        # Nothing remembered on this Synapse: read and re-added at once.
        assert "profile_recheck_interval has no effect on this Synapse" in hs.server.log_text()
        assert hs.client.threepid_set(token) == {("email", "sven@example.org")}
        return
    # Same answer from ma1sd, found in step less than 300 s ago: not read, not re-added.
    assert hs.client.threepid_set(token) == set()
    assert not any("Added the email" in line for line in hs.new_log_lines(mark))

    # A changed answer from ma1sd is applied at once.
    user.three_pids = [{"medium": "email", "address": "sven.new@example.org"}]
    hs.client.login_ok(user.user_id, user.password)
    assert hs.client.threepid_set(token) == {("email", "sven.new@example.org")}
