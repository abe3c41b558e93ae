"""The transport between the driver and the workers: a small interface, torch RPC behind it.

Processes are numbered: rank 0 is the driver, ranks ``1..W-1`` are workers. A transport calls a
module-level function in another process, synchronously (:meth:`Transport.call`) or not
(:meth:`Transport.call_async`); that is all the runtime needs, so another implementation (gRPC,
ZeroMQ, torch.distributed.pipelining) can replace :class:`RpcTransport`, whose backend
(``torch.distributed.rpc``) is in maintenance mode upstream.

:class:`RpcTransport` uses TensorPipe. Binding is explicit: the rendezvous store of rank 0 listens
only on the master address (a socket bound by :func:`bind_master`, never the wildcard address
that torch's own ``tcp://`` rendezvous uses), and TensorPipe listens on the interface that holds
the bind address (``127.0.0.1`` unless another address is given). torch RPC unpickles what it
receives: run it on a trusted network only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import re
import socket
import struct
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlparse

from edgepart.errors import InputError

__all__ = [
    "DISCONNECT_LOG",
    "Address",
    "Reply",
    "RpcTransport",
    "Transport",
    "bind_master",
    "call_while",
    "disconnects_unlogged",
    "joined_transport",
    "local_address_towards",
    "parse_address",
]

T = TypeVar("T")
Address = tuple[str, int]
_SCHEME = "edgepart"
_UNSET = -1.0  # torch.distributed.rpc's "use the default timeout"
_LISTENERS: dict[Address, socket.socket] = {}
_REGISTERED: list[bool] = []
_JOINED: list[Transport] = []  # this process's open transport (torch RPC allows one)


class Reply(Protocol):
    """The pending result of an asynchronous call."""

    def wait(self) -> Any: ...

    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...


class Transport(Protocol):
    """Calls between the driver (rank 0) and the workers (ranks 1..W-1)."""

    rank: int

    def call(self, rank: int, fn: Callable[..., T], *args: Any, timeout: float = 0) -> T: ...

    def call_async(self, rank: int, fn: Callable[..., Any], *args: Any,
                   timeout: float = 0) -> Reply: ...

    def close(self) -> None: ...


def call_while(transport: Transport, still_wanted: Callable[[], bool], rank: int,
               fn: Callable[..., Any], *args: Any, poll_s: float = 0.05) -> bool:
    """Call ``fn`` on ``rank`` and wait for it only while ``still_wanted()``; True when the call
    completed, False when it was given up (its reply is then ignored). Raises what the call
    raises.

    A message to a worker that hangs (stopped, not dead) would otherwise block its sender until
    the transport's timeout; once the driver has deployed around the hung worker, the message
    is obsolete and its sender must serve the new deployment.
    """
    reply = transport.call_async(rank, fn, *args)
    done = threading.Event()
    reply.add_done_callback(lambda _: done.set())
    while not done.wait(poll_s):
        if not still_wanted():
            return False
    reply.wait()
    return True


def joined_transport() -> Transport:
    """The transport this process has joined its group with (and not closed yet), for code
    that runs in it at another process's call, such as a stage that passes its output on to
    the next stage's worker. Raises RuntimeError when there is none."""
    if not _JOINED:
        raise RuntimeError("this process has joined no edgepart group")
    return _JOINED[0]


def parse_address(text: str, what: str = "--master") -> Address:
    """``HOST:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InputError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def bind_master(host: str, port: int) -> Address:
    """Bind rank 0's rendezvous socket now (port 0 picks a free port); returns the address."""
    if _interface_of(host) is None:
        raise InputError(f"--master {host}:{port}: not the address of one of this machine's "
                         "network interfaces (listening on every interface is refused)")
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as err:
        reason = "port in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
        raise InputError(f"--master {host}:{port}: cannot listen ({reason})") from None
    address = (host, sock.getsockname()[1])
    _LISTENERS[address] = sock
    return address


def local_address_towards(host: str, port: int) -> str:
    """The local IP address that routes to ``host`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            return str(probe.getsockname()[0])
    except OSError as err:
        raise InputError(f"--master {host}:{port}: unreachable ({err.strerror or err})") from None


def _interface_of(address: str) -> str | None:
    """The name of the network interface that holds IPv4 ``address`` (a name is resolved), if
    any (Linux)."""
    try:
        address = socket.gethostbyname(address)
    except OSError:
        return None
    if ipaddress.ip_address(address).is_loopback:
        return "lo"
    packed = socket.inet_aton(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                info = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
            if info[20:24] == packed:
                return name
    return None


def _rendezvous(url: str, timeout: timedelta = timedelta(seconds=60),
                **_: Any) -> Iterator[tuple[Any, int, int]]:
    """torch rendezvous handler for ``edgepart://HOST:PORT``: rank 0 serves on its bound socket."""
    import torch.distributed as dist

    parts = urlparse(url)
    query = parse_qs(parts.query)
    rank, world = int(query["rank"][0]), int(query["world_size"][0])
    host, port = str(parts.hostname), int(parts.port or 0)
    if rank == 0:
        fd = _LISTENERS.pop((host, port)).detach()  # the store owns (and closes) the socket now
        store = dist.TCPStore(host, port, world, True, timeout, master_listen_fd=fd)
    else:
        store = dist.TCPStore(host, port, world, False, timeout)
    yield store, rank, world
    raise RuntimeError("edgepart:// rendezvous cannot be repeated")


def _reset_group_counters(rpc: Any) -> None:
    """Let a process join a fresh group again (a driver run twice in one process, as in tests).

    torch.distributed.rpc counts, per process, its ``init_rpc`` calls (the prefix of the store
    keys) and its all-gathers (the ids of the start-up and shutdown barriers), assuming every
    member of a group has counted the same. Every group here has a fresh store and fresh worker
    processes, which count from 0, so the joining process starts from 0 too.
    """
    rpc._init_counter = 0
    rpc.api._all_gather_sequence_id.clear()
    rpc.api._all_gather_sequence_id_to_states.clear()


class RpcTransport:
    """:class:`Transport` over ``torch.distributed.rpc`` (TensorPipe). Process names: ``w{rank}``.

    ``master`` is rank 0's address: rank 0 must have called :func:`bind_master` for it. ``bind``
    is the address this process listens on (default: the one that routes to the master).
    """

    def __init__(self, rank: int, world: int, master: Address, bind: str | None = None,
                 timeout_s: float = 120.0) -> None:
        import torch.distributed as dist
        import torch.distributed.rpc as rpc

        self.rank = rank
        self._rpc = rpc
        address = bind or (master[0] if rank == 0 else local_address_towards(*master))
        iface = _interface_of(address)
        if iface is None:
            raise InputError(f"{address}: no network interface of this machine has this address "
                             "(give --master or --bind an address of this machine)")
        os.environ["TP_SOCKET_IFNAME"] = iface
        if not _REGISTERED:
            dist.register_rendezvous_handler(_SCHEME, _rendezvous)
            _REGISTERED.append(True)
        options = rpc.TensorPipeRpcBackendOptions(
            init_method=f"{_SCHEME}://{master[0]}:{master[1]}", rpc_timeout=timeout_s,
            num_worker_threads=8, _transports=TRANSPORTS)
        _reset_group_counters(rpc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            rpc.init_rpc(f"w{rank}", rank=rank, world_size=world, rpc_backend_options=options)
        _JOINED[:] = [self]

    def call(self, rank: int, fn: Callable[..., T], *args: Any, timeout: float = 0) -> T:
        result: T = self._rpc.rpc_sync(f"w{rank}", fn, args, timeout=timeout or _UNSET)
        return result

    def call_async(self, rank: int, fn: Callable[..., Any], *args: Any,
                   timeout: float = 0) -> Reply:
        future: Reply = self._rpc.rpc_async(f"w{rank}", fn, args, timeout=timeout or _UNSET)
        return future

    def close(self) -> None:
        """Leave the group without waiting for the others (some may be dead).

        TensorPipe's shutdown can block for ever joining its shared-memory transport after a
        peer died in the middle of a connection (seen once in a full test run, in the driver of a
        generation whose stage worker was killed). It runs in a daemon thread; after
        :data:`CLOSE_WAIT_S` this process goes on without it and :func:`shutdown_stuck` says so
        (the agent is then half shut down: only the process's end clears it)."""
        if self in _JOINED:
            _JOINED.remove(self)
        closer = threading.Thread(target=self._shutdown, name="rpc-shutdown", daemon=True)
        closer.start()
        closer.join(CLOSE_WAIT_S)
        if closer.is_alive():
            _STUCK.append(closer)

    def _shutdown(self) -> None:
        with contextlib.suppress(Exception):  # a dead peer's errors: nothing left to tell
            self._rpc.shutdown(graceful=False)


TRANSPORTS = ["uv"]
"""TensorPipe's transports: TCP through libuv only. Its shared-memory transport (the default
between processes of one host) runs a reactor thread per process that polls without sleeping
(1.49 s of CPU in 1.5 s in an idle process, measured): with a driver and two workers on a
2-core host that is three busy threads against two compute threads, and a 2-worker split of
VGG-16 reached 0.68 of its predicted speedup with it against 0.76-0.80 without it
(bench/split_speedup.py, quiet host). Across machines TensorPipe uses TCP anyway, and the
emulated links are timed on loopback TCP, so the same transport on one host is also the
faithful one."""

CLOSE_WAIT_S = 20.0
"""The longest :meth:`RpcTransport.close` waits for TensorPipe's shutdown."""

_STUCK: list[threading.Thread] = []


def shutdown_stuck() -> bool:
    """Whether an RPC shutdown in this process never ended (:meth:`RpcTransport.close`): such a
    process must end with ``os._exit``, since the interpreter's own exit would wait for it."""
    return bool(_STUCK)


DISCONNECT_LOG = re.compile(rb"^\[W[^\]]*tensorpipe_agent\.cpp:\d+\] RPC agent for \S+ "
                            rb"(encountered error|won't send response to request)")
"""TensorPipe's warnings for a connection that broke (a worker that died or was killed, or any
peer during a non-graceful shutdown) and for a call that came in while the agent shut down (a
worker waiting for the driver to leave, see :mod:`~edgepart.runtime.worker`)."""


@contextlib.contextmanager
def disconnects_unlogged() -> Iterator[None]:
    """For the duration, drop TensorPipe's :data:`DISCONNECT_LOG` lines from this process's
    standard error (file descriptor 2); every other line passes through unchanged.

    TensorPipe logs every broken connection at warning level from its own threads, unless the
    agent was shut down gracefully, and a graceful shutdown is a barrier that every process of
    the group must enter, so it hangs when a worker has died. The runtime expects these breaks
    (it detects a lost worker itself, and reports it) and closes its group non-gracefully, so
    the lines tell a user nothing; a filter on the descriptor is the only way to drop them,
    since they are written by C++ code. The driver runs inside it.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    relay = threading.Thread(target=_relay_lines, args=(read_end, saved), daemon=True)
    relay.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the relay reads to its end
        relay.join(5)
        os.close(saved)


def _relay_lines(read_end: int, out: int) -> None:
    """Copy lines from ``read_end`` to ``out``, leaving out :data:`DISCONNECT_LOG` lines. It
    reads to the end whatever happens to ``out`` (a closed terminal, a broken pipe): a relay
    that stopped reading would let the pipe fill and block every writer of standard error."""
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as source:
        while chunk := source.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            _write(out, b"".join(ln + b"\n" for ln in lines if not DISCONNECT_LOG.match(ln)))
    if not DISCONNECT_LOG.match(pending):
        _write(out, pending)


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data):]
