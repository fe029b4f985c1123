"""Prometheus metrics, exposed by Synapse's own metrics listener.

They live in prometheus_client's default registry, which is the one Synapse
serves on its ``metrics`` listener. All names start with ``rest_auth_provider_``.
"""

from prometheus_client import Counter, Gauge, Histogram

# Outcomes of a login attempt handled by the module (see docs/metrics.md).
SUCCESS = "success"
BAD_CREDENTIALS = "bad_credentials"
# The identity backend (ma1sd or the REST store) could not be asked or answered nonsense.
BACKEND_ERROR = "backend_error"
# Synapse's side failed: the account could not be created, or an unexpected error.
SYNAPSE_ERROR = "synapse_error"
REFUSED_LOCALLY = "refused_locally"
OUTCOMES = (SUCCESS, BAD_CREDENTIALS, BACKEND_ERROR, SYNAPSE_ERROR, REFUSED_LOCALLY)

logins = Counter(
    "rest_auth_provider_logins_total",
    "Login attempts handled by rest_auth_provider, by outcome: success, bad_credentials, "
    "backend_error (the identity backend failed), synapse_error (Synapse's side failed), refused_locally.",
    ["outcome"],
)
backend_request_duration = Histogram(
    "rest_auth_provider_ma1sd_request_duration_seconds",
    "Time from sending a request to ma1sd to having its whole answer (or giving up).",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
backend_info = Gauge(
    "rest_auth_provider_backend_info",
    '1 for the identity service this process\'s module asks: backend="ma1sd" or "rest".',
    ["backend"],
)
registrations = Counter(
    "rest_auth_provider_registrations_total",
    "Accounts created by rest_auth_provider on a first login.",
)
profile_writes = Counter(
    "rest_auth_provider_profile_writes_total",
    "Profile changes made from ma1sd's answer, by kind.",
    ["kind"],
)
profile_reads_skipped = Counter(
    "rest_auth_provider_profile_reads_skipped_total",
    "Profile reads skipped because a login within profile_recheck_interval found the same answer in step, by kind.",
    ["kind"],
)

for _outcome in OUTCOMES:
    logins.labels(outcome=_outcome)
for _kind in ("displayname", "threepid_add", "threepid_remove"):
    profile_writes.labels(kind=_kind)
for _kind in ("displayname", "threepids"):
    profile_reads_skipped.labels(kind=_kind)
for _endpoint in ("check_credentials", "lookup", "auth_login", "identity_single"):
    backend_request_duration.labels(endpoint=_endpoint)
