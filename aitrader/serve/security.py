"""Who may talk to a server: loopback by default; anything else only over CURVE with an allow-list.

``aitrader serve keygen --out DIR --name NAME`` writes a CURVE key pair with pyzmq's
``zmq.auth.create_certificates``: ``NAME.key`` (public, give it to the other side) and
``NAME.key_secret`` (keep it). A server binding a non-loopback address needs ``--allow-remote``,
its own ``--curve-secret server.key_secret`` and ``--curve-clients DIR`` (a folder of the allowed
clients' public ``*.key`` files); pyzmq's authenticator (``zmq.auth.thread.ThreadAuthenticator``)
then refuses every client whose key is not in that folder, before any request is read. A client
connects with the server's public key and its own key pair (``--curve-server``/``--curve-secret``
of the client options, or :class:`CurveClient`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitrader.errors import ConfigError

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(endpoint: str) -> bool:
    """True for ``ipc://``/``inproc://`` and ``tcp://`` on a loopback address (127.0.0.0/8, ::1, localhost)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise ConfigError(f"--bind {endpoint!r} is not a ZeroMQ endpoint; use e.g. tcp://127.0.0.1:5555")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        raise ConfigError(f"--bind {endpoint!r}: transport {scheme!r} is not supported; use tcp:// or ipc://")
    host = rest.rpartition(":")[0].strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name, a host name or *: not provably loopback


def _load(path: Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise ConfigError(f"CURVE key file {path} does not exist; create one with aitrader serve keygen")
    try:
        public, sec = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CURVE key file {path}: {exc}; create one with aitrader serve keygen") \
            from exc
    if secret and sec is None:
        raise ConfigError(f"{path} holds no secret key; pass the .key_secret file written by aitrader serve keygen")
    return public, sec


@dataclass
class CurveSetup:
    """The server side: its key pair and the folder of allowed client public keys."""

    secret_file: Path
    clients_dir: Path

    def __post_init__(self) -> None:
        self.public, self.secret = _load(self.secret_file, secret=True)
        if not self.clients_dir.is_dir() or not any(self.clients_dir.glob("*.key")):
            raise ConfigError(f"--curve-clients {self.clients_dir} holds no client public key (*.key); copy the "
                              "clients' .key files (aitrader serve keygen) there")

    def apply(self, ctx: Any, sock: Any) -> Any:
        """Start the authenticator on ``ctx`` and make ``sock`` a CURVE server; returns the authenticator."""
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(self.clients_dir))
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        return auth


@dataclass
class CurveClient:
    """The client side: the server's public key file and the client's own secret key file."""

    server_public_file: Path
    secret_file: Path

    def apply(self, sock: Any) -> None:
        server_public, _ = _load(self.server_public_file, secret=False)
        public, secret = _load(self.secret_file, secret=True)
        sock.curve_serverkey = server_public
        sock.curve_publickey = public
        sock.curve_secretkey = secret


def check_bind(bind: str, *, allow_remote: bool, curve: CurveSetup | None) -> None:
    """A non-loopback bind needs both --allow-remote and CURVE; ConfigError says which is missing."""
    if is_loopback(bind):
        return
    if not allow_remote:
        raise ConfigError(f"--bind {bind} is not a loopback address: anyone who can reach it could query and "
                          "reload your models; pass --allow-remote together with --curve-secret and "
                          "--curve-clients, or bind tcp://127.0.0.1:PORT")
    if curve is None:
        raise ConfigError(f"--bind {bind} with --allow-remote needs CURVE authentication: pass --curve-secret "
                          "SERVER.key_secret and --curve-clients DIR (create keys with aitrader serve keygen)")


def keygen(out: str | Path, name: str) -> dict[str, str]:
    """Write ``NAME.key`` and ``NAME.key_secret`` under ``out``; refuses to overwrite."""
    import zmq.auth

    folder = Path(out)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--name {name!r} is not a plain file name; use e.g. server or client1")
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise ConfigError(f"{public} or {secret} exists already; pick another --name or remove the old pair")
    folder.mkdir(parents=True, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(str(folder), name)
    Path(sec).chmod(0o600)
    return {"public": str(pub), "secret": str(sec)}
