"""A stand-in for ma1sd that speaks its real wire protocol over real HTTP.

It serves ``POST /_matrix-internal/identity/v1/check_credentials`` and
``GET /_matrix/identity/api/v1/lookup`` on a free loopback port, from a thread,
so it works both beside Twisted's reactor (unit tests) and beside a Synapse
subprocess (integration tests, the demo, the benchmark).

Each test sets its users, a reply delay and a fault. Replies have exactly
the shape ma1sd sends (``CredentialsValidationResponse`` serialised by Gson):
on success ``{"auth": {"success": true, "display_name": ..., "profile":
{"display_name": ..., "three_pids": [...]}}}``, on failure
``{"auth": {"success": false, "profile": {"three_pids": []}}}``.

:mod:`support.fake_reststore` is the same server speaking the REST identity
store protocol instead: it overrides the protocol methods (``route``,
``refusal_reply``) and shares the directory, faults and request log.
"""

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple, TypeVar
from urllib.parse import parse_qs, urlsplit

CHECK_PATH = "/_matrix-internal/identity/v1/check_credentials"
LOOKUP_PATH = "/_matrix/identity/api/v1/lookup"

# The fake's own class (FakeMa1sd or a subclass), returned by start() and ``with``.
_Fake = TypeVar("_Fake", bound="FakeMa1sd")


@dataclass
class FakeUser:
    """A directory entry: password, display name and 3PIDs as ma1sd reports them."""

    user_id: str
    password: str
    display_name: Optional[str] = None
    three_pids: List[Dict[str, str]] = field(default_factory=list)
    enabled: bool = True


@dataclass
class Fault:
    """How the fake misbehaves. ``kind`` is one of:

    ``none``; ``hang`` (accept, never answer); ``trickle`` (headers, then the
    body a byte every ``seconds``); ``redirect`` (``status`` with a Location);
    ``status`` (``status`` with ``body``); ``body`` (200 with ``body`` as is);
    ``huge`` (200 with ``size`` bytes of JSON); ``cutoff`` (a Content-Length
    larger than the body sent, then close); ``close`` (close without a reply);
    ``close_reused`` (close a kept-alive connection at its second request);
    ``success_missing`` (the normal reply, without ``auth.success``).
    """

    kind: str = "none"
    status: int = 200
    body: bytes = b""
    size: int = 0
    seconds: float = 0.0
    location: str = "http://127.0.0.1:9/elsewhere"


class FakeMa1sd:
    """The fake server. Use as a context manager or call start() and stop()."""

    #: Where password checks and 3PID lookups are served (protocol-agnostic
    #: tests use these, or password_checks() and lookups()).
    check_path = CHECK_PATH
    lookup_path = LOOKUP_PATH
    thread_name = "fake-ma1sd"

    def __init__(self, tls: Optional[Tuple[str, str]] = None, required_headers: Optional[Dict[str, str]] = None):
        self.users: Dict[str, FakeUser] = {}
        self.delay = 0.0
        self.fault = Fault()
        self.required_headers = dict(required_headers or {})
        self.requests: List[Dict[str, Any]] = []
        self.connections = 0
        self.connection_errors = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._sockets: List[socket.socket] = []
        self._stopping = threading.Event()
        self._tls = tls
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0

    # -- directory -----------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        password: str,
        display_name: Optional[str] = None,
        emails: Tuple[str, ...] = (),
        msisdns: Tuple[str, ...] = (),
        extra_three_pids: Tuple[Dict[str, str], ...] = (),
    ) -> FakeUser:
        pids = [{"medium": "email", "address": e} for e in emails]
        pids += [{"medium": "msisdn", "address": m} for m in msisdns]
        pids += list(extra_three_pids)
        user = FakeUser(user_id, password, display_name, pids)
        self.users[user_id.lower()] = user
        return user

    def _lookup(self, medium: str, address: str) -> Optional[str]:
        wanted = address.lower() if medium == "email" else "".join(c for c in address if c.isdigit())
        for user in self.users.values():
            for pid in user.three_pids:
                have = (
                    pid["address"].lower() if medium == "email" else "".join(c for c in pid["address"] if c.isdigit())
                )
                if pid["medium"] == medium and have == wanted:
                    return user.user_id
        return None

    # -- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return "%s://127.0.0.1:%d" % (scheme, self.port)

    def start(self: _Fake, port: int = 0) -> _Fake:
        fake = self

        class Server(ThreadingHTTPServer):
            # ma1sd (Undertow) accepts a deep backlog; the stdlib default of 5
            # would drop simultaneous first connections into SYN retries.
            request_queue_size = 128
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # Failed TLS handshakes and dropped connections are part of
                # the tests; they need no traceback on stderr.
                with fake._lock:
                    fake.connection_errors += 1

            def get_request(self) -> Tuple[socket.socket, Any]:
                sock, addr = super().get_request()
                if fake._tls:
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    context.load_cert_chain(*fake._tls)
                    sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                with fake._lock:
                    fake.connections += 1
                    fake._sockets.append(sock)
                return sock, addr

        class Handler(_Handler):
            server_fake = fake

        self._stopping.clear()
        self._server = Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops listening (new connections are refused), ends open requests
        and closes kept-alive connections, as a process that exits would."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self: _Fake) -> _Fake:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset(self) -> None:
        """Clears faults, delay and the request log (users stay)."""
        self.fault = Fault()
        self.delay = 0.0
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0
            self.connections = 0

    def requests_for(self, path: str) -> List[Dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def password_checks(self) -> List[Dict[str, Any]]:
        """Returns the recorded password checks (each with ``user_id`` and
        ``password`` once its body could be read)."""
        return self.requests_for(self.check_path)

    def lookups(self) -> List[Dict[str, Any]]:
        """Returns the recorded 3PID lookups (each with ``medium`` and ``address``)."""
        return self.requests_for(self.lookup_path)

    # -- replies ---------------------------------------------------------------

    def credentials_reply(self, user_id: str, password: str) -> Dict[str, Any]:
        user = self.users.get(user_id.lower())
        if user is None or not user.enabled or user.password != password:
            return {"auth": {"success": False, "profile": {"three_pids": []}}}
        auth: Dict[str, Any] = {"success": True, "profile": {"three_pids": list(user.three_pids)}}
        if user.display_name is not None:
            auth["display_name"] = user.display_name
            auth["profile"]["display_name"] = user.display_name
        return {"auth": auth}

    def refusal_reply(self) -> Dict[str, Any]:
        """Returns the body of a refused password check."""
        return self.credentials_reply("@nobody:invalid", "")

    def route(self, method: str, path: str, record: Dict[str, Any], raw: bytes) -> Optional[Tuple[int, Any]]:
        """Returns (status, JSON reply) for a request of the protocol, or None
        for an unknown method or path; notes what it read in ``record``."""
        if method == "POST" and path == CHECK_PATH:
            try:
                user = json.loads(raw)["user"]
                user_id, password = user["id"], user["password"]
            except (ValueError, KeyError, TypeError):
                return 400, {"errcode": "M_JSON_MISSING_KEYS", "error": "Missing id or password keys"}
            record["user_id"] = user_id
            record["password"] = password
            return 200, self.credentials_reply(user_id, password)
        if method == "GET" and path == LOOKUP_PATH:
            medium = record["query"].get("medium", [""])[0]
            address = record["query"].get("address", [""])[0]
            record["medium"] = medium
            record["address"] = address
            return 200, self.lookup_reply(medium, address)
        return None

    def lookup_reply(self, medium: str, address: str) -> Dict[str, Any]:
        mxid = self._lookup(medium, address)
        if mxid is None:
            return {}
        now = int(time.time() * 1000)
        return {
            "address": address,
            "medium": medium,
            "mxid": mxid,
            "not_before": now - 1000,
            "not_after": now + 3600 * 1000,
            "ts": now,
            "signatures": {},
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle's
    # algorithm and delayed ACKs add 40 ms to every reply on a kept-alive
    # connection, which ma1sd (Undertow) does not do.
    disable_nagle_algorithm = True
    server_fake: FakeMa1sd

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.served = getattr(self, "served", 0) + 1
        if fake.fault.kind == "close_reused" and self.served > 1:
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        record: Dict[str, Any] = {
            "method": method,
            "path": parts.path,
            "query": parse_qs(parts.query),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": raw,
        }
        with fake._lock:
            fake.requests.append(record)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._answer(fake, method, parts.path, record, raw)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _answer(self, fake: FakeMa1sd, method: str, path: str, record: Dict[str, Any], raw: bytes) -> None:
        if fake.delay:
            fake._stopping.wait(fake.delay)
        for name, value in fake.required_headers.items():
            if record["headers"].get(name.lower()) != value:
                self._send(401, b'{"errcode":"M_UNAUTHORIZED","error":"missing or wrong credentials"}')
                return
        fault = fake.fault
        if fault.kind == "hang":
            fake._stopping.wait(600)
            self.close_connection = True
            return
        if fault.kind == "close":
            self.close_connection = True
            return
        if fault.kind == "redirect":
            self.send_response(fault.status)
            self.send_header("Location", fault.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault.kind == "status":
            self._send(fault.status, fault.body)
            return
        if fault.kind == "body":
            self._send(200, fault.body)
            return
        if fault.kind == "huge":
            self._send(200, b'{"auth": {"success": true, "pad": "' + b"x" * fault.size + b'"}}')
            return
        if fault.kind == "cutoff":
            body = json.dumps(fake.refusal_reply()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return

        routed = fake.route(method, path, record, raw)
        if routed is None:
            self._send(404, b'{"errcode":"M_NOT_FOUND","error":"Not found"}')
            return
        status, reply = routed
        if fault.kind == "success_missing" and isinstance(reply, dict) and isinstance(reply.get("auth"), dict):
            reply["auth"].pop("success", None)
        body = json.dumps(reply).encode()
        if fault.kind == "trickle":
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                if fake._stopping.wait(fault.seconds):
                    return
            return
        self._send(status, body)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
