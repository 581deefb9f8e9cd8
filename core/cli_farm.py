"""``nnport farm join|status|stop``: start, inspect and stop the nodes of a device farm (``nnport.farm``).

The commands parse, call ``nnport.farm`` and print; the logic lives there.
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli import add_json_argument, write_json
from .errors import InputError


def register(sub: Any) -> None:
    p = sub.add_parser("farm", help="a device farm on Ray: join a node, show the farm, stop this host's nodes")
    fsub = p.add_subparsers(title="farm commands", metavar="FARM_COMMAND")

    j = fsub.add_parser("join", help="start a Ray node here that offers this host's devices (--head starts a new farm)")
    where = j.add_mutually_exclusive_group(required=True)
    where.add_argument("--head", action="store_true", help="start a new farm (the Ray head) on this host")
    where.add_argument("--address", metavar="HOST:PORT", help="join the farm whose head is at HOST:PORT")
    j.add_argument("--port", type=int, default=None, help="head only: the port of the farm (default 6379)")
    j.add_argument("--ip", help="the address this node binds to and announces (default: Ray picks this host's address)")
    j.add_argument("--name", help="node name in device ids farm:<name>/... (default: this host's name)")
    j.add_argument(
        "--object-store-mb", type=int, default=None, help="Ray object store size in MiB (at least 75; default: Ray's)"
    )
    j.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may schedule here (default: all)")
    j.add_argument(
        "--worker-ports",
        metavar="MIN-MAX",
        help="worker port range (default: a range of its own per node started here)",
    )
    j.add_argument("--temp-dir", help="Ray's temporary directory (sessions, sockets, logs)")
    j.add_argument(
        "--dashboard", action="store_true", help="head only: start Ray's dashboard too, bound to --ip (off by default)"
    )
    j.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the node to come up")
    add_json_argument(j, "the node's record")
    j.set_defaults(func=cmd_join)

    s = fsub.add_parser("status", help="the farm's nodes, devices (busy/idle) and versions, and the nodes started here")
    s.add_argument("--address", metavar="HOST:PORT", help="the farm (default: NNPORT_FARM, else a head started here)")
    add_json_argument(s, "the farm's state")
    s.set_defaults(func=cmd_status)

    t = fsub.add_parser("stop", help="stop the nodes this host started (only those; never other Ray processes)")
    t.add_argument("names", nargs="*", help="node names (default: every node started here)")
    add_json_argument(t, "what was stopped")
    t.set_defaults(func=cmd_stop)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_join(args: argparse.Namespace) -> int:
    from . import farm
    from .cli import require_extra

    require_extra("ray", "farm", "farm join")
    ports = None
    if args.worker_ports:
        lo, sep, hi = args.worker_ports.partition("-")
        if not sep or not lo.isdigit() or not hi.isdigit() or int(lo) > int(hi):
            raise InputError(f"--worker-ports expects MIN-MAX, got {args.worker_ports!r}")
        ports = (int(lo), int(hi))
    if args.port is not None and not args.head:
        raise InputError("--port sets the port of a new farm: use it with --head (a joining node takes --address)")
    node = farm.join(
        head=args.head,
        address=args.address,
        port=args.port,
        ip=args.ip,
        name=args.name,
        object_store_mb=args.object_store_mb,
        num_cpus=args.num_cpus,
        worker_ports=ports,
        temp_dir=args.temp_dir,
        dashboard=args.dashboard,
        timeout_s=args.timeout,
    )
    write_json(args, node.to_dict())
    role = "head of a new farm" if node.head else "node"
    print(
        f"started {role} {node.name!r} (pid {node.pid}) at {node.address}; devices: {', '.join(node.devices) or 'none'}"
    )
    if node.head:
        print(
            f"use it: export {farm.ENV_ADDRESS}={node.address}; add nodes: nnport farm join --address "
            f"{node.address} --ip <their address>"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from . import farm
    from .cli import require_extra, table

    require_extra("ray", "farm", "farm status")
    st = farm.status(args.address)
    write_json(args, st.to_dict())
    print(f"farm: {st.address or '-'}" + (f"  ({st.error})" if st.error else ""))
    rows = []
    for node in st.nodes:
        diff = st.differences(node)
        versions = ", ".join(f"{k} {v}" for k, v in sorted(node.versions.items()) if k != "python")
        note = (
            "; differs here: " + ", ".join(f"{k} {a} (here {b})" for k, (a, b) in sorted(diff.items())) if diff else ""
        )
        rows.append(
            [
                node.name,
                "head" if node.head else "node",
                "alive" if node.alive else "dead",
                node.ip,
                str(node.facts.get("cpu_model", ""))[:40],
                versions + note,
            ]
        )
    if rows:
        print(table(rows, ["node", "role", "state", "ip", "cpu", "versions"]))
        dev_rows = []
        for node in st.nodes:
            for dev in node.devices:
                state = (
                    ("busy" if node.busy.get(dev["id"]) else "idle")
                    if dev.get("available") and node.alive
                    else f"unusable: {dev.get('reason') or 'node dead'}"[:90]
                )
                dev_rows.append(
                    [farm.device_id(node.name, dev["id"]), dev.get("kind", ""), str(dev.get("name", ""))[:40], state]
                )
        print()
        print(table(dev_rows, ["device", "kind", "name", "state"]))
    if st.local:
        print("\nstarted on this host:")
        print(
            table(
                [
                    [
                        n.name,
                        "head" if n.head else "node",
                        str(n.pid),
                        "running" if n.running() else "gone",
                        n.address,
                        n.log,
                    ]
                    for n in st.local
                ],
                ["node", "role", "pid", "state", "address", "log"],
            )
        )
    return 0 if st.error is None else 1


def cmd_stop(args: argparse.Namespace) -> int:
    from . import farm

    stopped = farm.stop(args.names or None)
    write_json(args, [n.name for n in stopped])
    if not stopped:
        print("no node started on this host is recorded")
    for node in stopped:
        print(f"stopped {node.name} (pid {node.pid})")
    return 0
