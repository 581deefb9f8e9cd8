"""The device farm: nnport on a Ray cluster, where a remote device is a device.

A farm is a Ray cluster whose nodes were started by ``nnport farm join`` (this
module's ``join``).  Each node advertises one Ray custom resource per usable
device that nnport finds on it, in the environment the node was started in
(``NNPORT_DISABLE_PLUGINS=openvino nnport farm join ...`` gives a node without
OpenVINO devices), and publishes its host facts (CPU, nnport and runtime
versions, its device list) in the cluster's key-value store.  The ``farm``
backend (``nnport.plugins.farm``) lists every device of every live node as
``farm:<node name>/<backend>:<device>`` and runs compile, run and measure in an
actor on the node that owns the device.

Nothing here imports Ray at module level: ``import nnport`` and ``nnport
backends`` cost nothing until a farm is configured (``NNPORT_FARM=<address>``
or ``nnport.farm.configure``).

Process control is by PID, never ``ray stop`` (which kills every Ray process on
the host, other users' included): each node is one ``ray start --block``
process started in a session of its own; ``stop`` signals that session's
processes only (raylet, GCS, log monitor, agents, workers) and only for the
nodes this host started, as recorded under ``state_dir()``.

Network exposure (``docs/farm.md``): nodes announce the address given with
``ip``; the dashboard stays off unless ``dashboard=True``; usage statistics are
off.  Ray itself has no authentication unless token authentication is enabled.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import NnportError

ENV_ADDRESS = "NNPORT_FARM"
"""The environment variable naming the farm (a Ray head ``HOST:PORT``); unset: no farm, no Ray import."""

ENV_STATE = "NNPORT_FARM_STATE"
"""Where this host records the nodes it started (default: ``<nnport cache>/farm``)."""

PREFIX = "farm"
KV_NAMESPACE = "nnport"
KV_NODE_PREFIX = "farm/node/"
NODE_RESOURCE = "nnport_node:{node}"
DEVICE_RESOURCE = "nnport_dev:{node}/{device}"
DEFAULT_PORT = 6379
WORKER_PORT_BASE = 20000
WORKER_PORT_SPAN = 200
"""Each node this host starts gets its own worker port range (Ray's default range is shared)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

_address_override: str | None = None
_connected: str | None = None
_children: dict[int, subprocess.Popen[bytes]] = {}


class FarmError(NnportError):
    """A farm operation failed: a node would not start, a name is taken, no farm is configured."""


# -- names and ids ----------------------------------------------------------------------------


def device_id(node: str, local_id: str) -> str:
    """``farm:<node>/<local device id>``."""
    return f"{PREFIX}:{node}/{local_id}"


def split_device_id(device: str) -> tuple[str, str] | None:
    """``farm:<node>/<local id>`` -> (node, local id); None for any other id."""
    prefix, sep, rest = device.partition(":")
    if prefix.lower() != PREFIX or not sep:
        return None
    node, slash, local = rest.partition("/")
    if not slash or not node or not local:
        return None
    return node, local


def device_resource(node: str, local_id: str) -> str:
    """The Ray custom resource a node advertises for one of its devices."""
    return DEVICE_RESOURCE.format(node=node, device=local_id)


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise FarmError(
            f"node name {name!r} must be 1-63 letters, digits, '.', '_' or '-' (it becomes part of device "
            "ids farm:<node>/...)"
        )
    return name


# -- configuration ---------------------------------------------------------------------------


def configure(address: str | None) -> None:
    """Use the farm at ``address`` in this process (as ``NNPORT_FARM`` does); None: back to the environment.

    Call it before the first ``nnport.devices()``/``compile``: device lists are
    cached per plugin manager (``nnport.manager.set_plugin_manager(None)``
    rediscovers).
    """
    global _address_override
    _address_override = address


def configured_address() -> str | None:
    """The farm this process uses: ``configure``'s address, else ``$NNPORT_FARM``, else None."""
    return _address_override or os.environ.get(ENV_ADDRESS, "").strip() or None


def state_dir() -> Path:
    env = os.environ.get(ENV_STATE)
    if env:
        return Path(env).expanduser()
    from .paths import cache_root

    return cache_root() / "farm"


# -- connection (the driver side) ----------------------------------------------------------------


def connect(address: str | None = None) -> Any:
    """Connect this process to the farm as a Ray driver (once); returns the ``ray`` module.

    Raises ``FarmError`` when no farm is configured, Ray is missing or the head
    cannot be reached.  Logs of remote workers are not forwarded here.
    """
    address = address or configured_address()
    if not address:
        raise FarmError(f"no farm configured: set {ENV_ADDRESS}=<head HOST:PORT> (see `nnport farm join`)")
    try:
        import ray
    except ImportError as exc:
        raise FarmError("the farm needs Ray: pip install 'nnport[farm]'") from exc
    global _connected
    if ray.is_initialized():
        if _connected in (None, address):
            return ray
        ray.shutdown()  # configured for another farm since: reconnect
    import logging

    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:  # fail in seconds, not after Ray's minute of retries
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise FarmError(
                f"cannot reach the farm's head at {address}: {exc} (is `nnport farm join --head` running there?)"
            ) from exc
    kwargs: dict[str, Any] = {
        "address": address,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "namespace": "nnport",
    }
    ip = os.environ.get("NNPORT_FARM_IP")
    if ip:
        kwargs["_node_ip_address"] = ip
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(**kwargs)
    except Exception as exc:
        raise FarmError(f"cannot connect to the farm at {address}: {type(exc).__name__}: {exc}") from exc
    _connected = address
    return ray


def _kv_get_all(ray: Any) -> dict[str, dict[str, Any]]:
    from ray.experimental import internal_kv

    found = {}
    for key in internal_kv._internal_kv_list(KV_NODE_PREFIX, namespace=KV_NAMESPACE):
        raw = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
        if raw:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            found[record.get("name", "")] = record
    return found


@dataclass
class FarmNode:
    """One node of the farm as the cluster sees it: facts published at join, liveness, busy devices."""

    name: str
    node_id: str
    ip: str
    alive: bool
    head: bool
    facts: dict[str, Any]
    busy: dict[str, bool] = field(default_factory=dict)
    """Local device id -> whether a lease (an actor of some driver) holds it now."""

    @property
    def devices(self) -> list[dict[str, Any]]:
        return list(self.facts.get("devices", []))

    @property
    def nnport_version(self) -> str:
        return str(self.facts.get("nnport", "?"))

    @property
    def versions(self) -> dict[str, str]:
        return dict(self.facts.get("versions", {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node_id": self.node_id,
            "ip": self.ip,
            "alive": self.alive,
            "head": self.head,
            "nnport": self.nnport_version,
            "versions": self.versions,
            "host": {k: self.facts.get(k) for k in ("hostname", "cpu_model", "cpu_count", "platform", "python")},
            "devices": [{**d, "busy": self.busy.get(d["id"], False)} for d in self.devices],
        }


def cluster_nodes(address: str | None = None, *, include_dead: bool = False) -> list[FarmNode]:
    """Every nnport node of the farm (joined with ``join``), live ones only unless ``include_dead``."""
    ray = connect(address)
    records = _kv_get_all(ray)
    alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
    try:
        total = ray.cluster_resources()
        available = ray.available_resources()
    except Exception:
        total, available = {}, {}
    nodes = []
    for name, rec in sorted(records.items()):
        node_id = rec.get("node_id", "")
        live = node_id in alive
        if not live and not include_dead:
            continue
        busy = {}
        for dev in rec.get("devices", []):
            res = device_resource(name, dev["id"])
            if res in total:
                busy[dev["id"]] = available.get(res, 0.0) < total[res]
        nodes.append(
            FarmNode(
                name=name,
                node_id=node_id,
                ip=rec.get("ip", ""),
                alive=live,
                head=bool(rec.get("head")),
                facts=rec,
                busy=busy,
            )
        )
    return nodes


def elsewhere(device: str, address: str | None = None) -> list[str]:
    """Usable devices of *other* live nodes with the same backend and kind as farm device ``device``.

    What ``nnport conformance --retry-elsewhere`` reruns a ``lost`` case on; the
    lost device's node may be dead (its published facts still say what it was).
    """
    where = split_device_id(device)
    if where is None:
        return []
    node, local = where
    nodes = cluster_nodes(address, include_dead=True)
    lost = next((d for n in nodes if n.name == node for d in n.devices if d["id"] == local), None)
    if lost is None:
        return []
    found = []
    for n in nodes:
        if n.name == node or not n.alive:
            continue
        for d in n.devices:
            if d.get("available") and d.get("backend") == lost.get("backend") and d.get("kind") == lost.get("kind"):
                found.append(device_id(n.name, d["id"]))
    return found


def node_alive(node_id: str) -> bool:
    """Whether the cluster still counts ``node_id`` as alive (a GCS call)."""
    import ray

    for n in ray.nodes():  # type: ignore[no-untyped-call]
        if n.get("NodeID") == node_id:
            return bool(n.get("Alive"))
    return False


# -- facts of this host ----------------------------------------------------------------------


def local_versions(only: Collection[str] | None = None) -> dict[str, str]:
    """nnport's and every available backend's runtime versions (or ``only`` those backends'), in this process."""
    from . import __version__
    from .api import backends
    from .manager import get_plugin_manager

    versions = {"nnport": __version__, "python": platform.python_version()}
    pm = get_plugin_manager()
    for row in backends():
        if row.status != "available" or row.name == PREFIX or only is not None and row.name not in only:
            continue
        try:
            versions.update(pm.backend(row.name).versions())
        except Exception as exc:
            versions[row.name] = f"unknown ({type(exc).__name__})"
    return versions


def node_facts() -> dict[str, Any]:
    """What a joining node advertises: host facts, versions, and nnport's devices here (farm excluded)."""
    from . import __version__
    from .api import devices
    from .manager import get_plugin_manager
    from .measuring import cpu_model

    pm = get_plugin_manager()
    found = []
    for dev in devices(include_unavailable=True):
        if dev.backend == PREFIX:
            continue
        entry = dev.to_dict()
        try:
            entry["capabilities"] = pm.backend(dev.backend).capabilities(dev).to_dict()
        except Exception:
            pass
        found.append(entry)
    return {
        "nnport": __version__,
        "versions": local_versions(),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),  # Ray forces 1 in actors; the farm restores this
        "devices": found,
    }


def version_differences(
    node_versions: Mapping[str, str], mine: Mapping[str, str] | None = None
) -> dict[str, tuple[str, str]]:
    """Packages whose version on a node differs from this process's: name -> (node's, ours)."""
    mine = local_versions() if mine is None else mine
    return {k: (str(v), str(mine[k])) for k, v in node_versions.items() if k in mine and str(mine[k]) != str(v)}


# -- join ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalNode:
    """A node this host started (``state_dir()/<name>.json``)."""

    name: str
    address: str
    ip: str | None
    head: bool
    pid: int
    start_ticks: int
    log: str
    started: str
    worker_ports: tuple[int, int]
    devices: tuple[str, ...] = ()

    def running(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["running"] = self.running()
        return d


def local_nodes() -> list[LocalNode]:
    """The nodes this host started and has not stopped (running or not)."""
    found = []
    folder = state_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            data["worker_ports"] = tuple(data["worker_ports"])
            data["devices"] = tuple(data.get("devices", ()))
            found.append(LocalNode(**data))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return found


def _ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    if beside.exists():
        return str(beside)
    import shutil

    found = shutil.which("ray")
    if not found:
        raise FarmError("the `ray` command is not installed: pip install 'nnport[farm]'")
    return found


def _free_port(ip: str | None) -> int:
    with socket.socket() as s:
        s.bind((ip or "", 0))
        return int(s.getsockname()[1])


def _worker_ports(taken: Sequence[LocalNode]) -> tuple[int, int]:
    used = [n.worker_ports for n in taken if n.running()]
    k = 0
    while True:
        lo = WORKER_PORT_BASE + k * WORKER_PORT_SPAN
        hi = lo + WORKER_PORT_SPAN - 1
        if all(hi < a or lo > b for a, b in used):
            return lo, hi
        k += 1


def _node_env(env: Mapping[str, str | None] | None) -> dict[str, str]:
    merged = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = str(v)
    merged.pop(ENV_ADDRESS, None)  # a node's own nnport lists local devices only, never the farm
    merged.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    merged["PYTHONUNBUFFERED"] = "1"
    return merged


def _helper(command: str, env: Mapping[str, str], payload: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run ``python -m nnport.farm COMMAND`` in the node's environment; JSON in, JSON out."""
    proc = subprocess.run(
        [sys.executable, "-m", "nnport.farm", command],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout_s,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise FarmError(f"nnport farm {command} failed (exit {proc.returncode}): {tail}")
    answer: dict[str, Any] = json.loads(lines[-1])
    if answer.get("error"):
        raise FarmError(answer["error"])
    return answer


def join(
    *,
    head: bool = False,
    address: str | None = None,
    port: int | None = None,
    ip: str | None = None,
    name: str | None = None,
    env: Mapping[str, str | None] | None = None,
    object_store_mb: int | None = None,
    num_cpus: int | None = None,
    worker_ports: tuple[int, int] | None = None,
    temp_dir: str | None = None,
    dashboard: bool = False,
    timeout_s: float = 180.0,
) -> LocalNode:
    """Start a Ray node on this host that offers nnport's devices here; returns once it is up.

    ``head=True`` starts a new farm (Ray head on ``ip:port``, port 6379 by
    default); ``address="HOST:PORT"`` adds a node to a farm.  ``ip`` is the
    address the node announces (give it: Ray otherwise picks this host's
    network address).  ``env`` overrides (None removes) environment variables of
    the node, so ``{"NNPORT_DISABLE_PLUGINS": "openvino"}`` starts a node
    without OpenVINO devices.  ``name`` defaults to this host's name (with a
    suffix when a node of that name is already in the farm).  Each node gets a
    worker port range of its own, so one host can run several nodes.  The
    dashboard stays off unless ``dashboard=True`` (then bound to ``ip``).
    """
    if head == bool(address):
        raise FarmError("give either head=True (start a farm) or address='HOST:PORT' (join one)")
    node_env = _node_env(env)
    mine = local_nodes()
    facts = _helper(
        "facts", node_env, {"address": address, "ip": ip, "local": [n.name for n in mine if n.running()]}, timeout_s
    )
    taken = set(facts.pop("taken", []))
    if name is None:
        base = re.sub(r"[^A-Za-z0-9._-]", "-", facts.get("hostname") or "node")[:50] or "node"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}-{k}"
    check_name(name)
    if name in taken:
        raise FarmError(f"a node named {name!r} is already in the farm; pick another --name")
    usable = [d for d in facts["devices"] if d.get("available")]
    resources = {NODE_RESOURCE.format(node=name): 1.0}
    resources.update({device_resource(name, d["id"]): 1.0 for d in usable})
    lo, hi = worker_ports or _worker_ports(mine)
    gcs_port = port or DEFAULT_PORT
    cmd = [
        _ray_executable(),
        "start",
        "--block",
        "--disable-usage-stats",
        f"--resources={json.dumps(resources)}",
        f"--min-worker-port={lo}",
        f"--max-worker-port={hi}",
    ]
    if head:
        cmd += ["--head", f"--port={gcs_port}"]
        cmd += [f"--include-dashboard={'true' if dashboard else 'false'}"]
        if dashboard and ip:
            cmd += [f"--dashboard-host={ip}"]
        join_address = f"{ip or _default_ip()}:{gcs_port}"
    else:
        cmd += [f"--address={address}"]
        join_address = str(address)
    if ip:
        cmd += [f"--node-ip-address={ip}"]
    cmd += [f"--dashboard-agent-listen-port={_free_port(ip)}"]
    if object_store_mb:
        cmd += [f"--object-store-memory={int(object_store_mb) * 1024 * 1024}"]
    if num_cpus is not None:
        cmd += [f"--num-cpus={int(num_cpus)}"]
    if temp_dir:
        cmd += [f"--temp-dir={temp_dir}"]
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=node_env, start_new_session=True
        )
    _children[proc.pid] = proc
    record = LocalNode(
        name=name,
        address=join_address,
        ip=ip,
        head=head,
        pid=proc.pid,
        start_ticks=_start_ticks(proc.pid) or 0,
        log=str(log_path),
        started=time.strftime("%Y-%m-%dT%H:%M:%S"),
        worker_ports=(lo, hi),
        devices=tuple(d["id"] for d in usable),
    )
    (folder / f"{name}.json").write_text(json.dumps(asdict(record), indent=1))
    try:
        _wait_started(proc, log_path, timeout_s)
        record_facts = {**facts, "name": name, "ip": ip or "", "head": head, "joined": record.started}
        _helper(
            "publish", node_env, {"address": join_address, "ip": ip, "name": name, "facts": record_facts}, timeout_s
        )
    except BaseException:
        _stop_node(record)
        raise
    return record


def _default_ip() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def _wait_started(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if "Ray runtime started" in text:
            return
        if proc.poll() is not None:
            raise FarmError(f"the Ray node did not start (exit {proc.returncode}); its log {log_path}: {_tail(text)}")
        time.sleep(0.25)
    raise FarmError(
        f"the Ray node did not start within {timeout_s:g} s; its log {log_path}: "
        f"{_tail(log_path.read_text(errors='replace'))}"
    )


def _tail(text: str, limit: int = 1200) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines)[-limit:]


# -- stop ---------------------------------------------------------------------------------------


def stop(names: Sequence[str] | None = None, *, grace_s: float = 10.0) -> list[LocalNode]:
    """Stop the nodes this host started (all, or those named); returns what was stopped.

    Signals only the processes of each node's own session (by PID): SIGTERM to
    the ``ray start --block`` leader, which stops its raylet, GCS and agents;
    then SIGKILL to whatever of that session is left after ``grace_s``.
    Workers (head) are stopped before the head.  Other Ray processes on the
    host, including other users' nodes, are never touched.
    """
    nodes = local_nodes()
    if names:
        unknown = sorted(set(names) - {n.name for n in nodes})
        if unknown:
            raise FarmError(
                f"no node named {unknown} was started on this host; started here: {[n.name for n in nodes]}"
            )
        nodes = [n for n in nodes if n.name in names]
    nodes.sort(key=lambda n: n.head)  # worker nodes first, then heads
    for node in nodes:
        _stop_node(node, grace_s)
    return nodes


def _stop_node(node: LocalNode, grace_s: float = 10.0) -> None:
    if node.running():
        pids = _session_pids(node.pid)
        try:
            os.kill(node.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            _reap(node.pid)
            if not [p for p in _session_pids(node.pid) if _alive(p)]:
                break
            time.sleep(0.2)
        for pid in set(_session_pids(node.pid)) | set(pids):
            if _alive(pid) and _session_of(pid) == node.pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    _reap(node.pid)
    try:
        (state_dir() / f"{node.name}.json").unlink()
    except FileNotFoundError:
        pass


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None:
        try:
            proc.wait(timeout=0.05)
            _children.pop(pid, None)
        except subprocess.TimeoutExpired:
            pass


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def _session_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[3]) if fields else None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _session_pids(sid: int) -> list[int]:
    """Every process of session ``sid`` (the node's ``ray start`` leader and all it started)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _session_of(int(entry)) == sid:
            found.append(int(entry))
    return found


def node_pids(node: LocalNode) -> dict[str, list[int]]:
    """The live processes of a node this host started, by program (raylet, gcs_server, ...)."""
    found: dict[str, list[int]] = {}
    if not node.running():
        return found
    for pid in _session_pids(node.pid):
        if not _alive(pid):
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        prog = Path(words[0]).name if words else "?"
        if prog.startswith("python"):
            script = next((w for w in words[1:] if not w.startswith("-")), prog)
            prog = Path(script).name
        found.setdefault(prog, []).append(pid)
    return found


# -- status -------------------------------------------------------------------------------------


@dataclass
class FarmStatus:
    """``nnport farm status``: the farm's nodes (with devices, busy/idle and versions) and this host's nodes."""

    address: str | None
    nodes: list[FarmNode]
    local: list[LocalNode]
    driver_versions: dict[str, str]
    error: str | None = None

    def differences(self, node: FarmNode) -> dict[str, tuple[str, str]]:
        return version_differences(node.versions, self.driver_versions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "error": self.error,
            "driver_versions": self.driver_versions,
            "nodes": [
                {
                    **n.to_dict(),
                    "version_differences": {k: {"node": a, "here": b} for k, (a, b) in self.differences(n).items()},
                }
                for n in self.nodes
            ],
            "started_here": [n.to_dict() for n in self.local],
        }


def status(address: str | None = None) -> FarmStatus:
    """The farm at ``address`` (default: ``NNPORT_FARM``, else a head this host started)."""
    local = local_nodes()
    if address is None:
        address = configured_address()
    if address is None:
        heads = [n for n in local if n.head and n.running()]
        address = heads[0].address if heads else None
    versions = local_versions()
    if address is None:
        return FarmStatus(
            None, [], local, versions, error=f"no farm configured ({ENV_ADDRESS} is unset and no head was started here)"
        )
    try:
        nodes = cluster_nodes(address, include_dead=True)
    except FarmError as exc:
        return FarmStatus(address, [], local, versions, error=str(exc))
    return FarmStatus(address, nodes, local, versions)


# -- helpers run in the node's environment (python -m nnport.farm facts|publish) -------------------------


def _cmd_facts(payload: dict[str, Any]) -> dict[str, Any]:
    facts = node_facts()
    taken = list(payload.get("local") or [])
    if payload.get("address"):
        ray = connect(payload["address"])
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        taken += [name for name, rec in _kv_get_all(ray).items() if rec.get("node_id") in alive]
    facts["taken"] = sorted(set(taken))
    return facts


def _cmd_publish(payload: dict[str, Any]) -> dict[str, Any]:
    from ray.experimental import internal_kv

    name = payload["name"]
    ray = connect(payload["address"])
    resource = NODE_RESOURCE.format(node=name)
    deadline = time.monotonic() + 60
    node = None
    while node is None and time.monotonic() < deadline:
        node = next((n for n in ray.nodes() if n.get("Alive") and resource in n.get("Resources", {})), None)
        if node is None:
            time.sleep(0.3)
    if node is None:
        return {"error": f"the node {name!r} did not register with the farm at {payload['address']}"}
    other = _kv_get_all(ray).get(name)
    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    if other and other.get("node_id") != node["NodeID"] and other.get("node_id") in alive:
        return {"error": f"a node named {name!r} is already in the farm"}
    record = {
        **payload["facts"],
        "node_id": node["NodeID"],
        "ip": node.get("NodeManagerAddress", payload.get("ip") or ""),
    }
    internal_kv._internal_kv_put(KV_NODE_PREFIX + name, json.dumps(record), overwrite=True, namespace=KV_NAMESPACE)
    return {"node_id": node["NodeID"]}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"facts": _cmd_facts, "publish": _cmd_publish}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python -m nnport.farm {'|'.join(commands)} < payload.json", file=sys.stderr)
        return 2
    payload = json.loads(sys.stdin.read() or "{}")
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever a runtime prints must not corrupt the answer
    try:
        answer = commands[argv[0]](payload)
    except NnportError as exc:
        answer = {"error": str(exc)}
    out.write(json.dumps(answer, default=str) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
