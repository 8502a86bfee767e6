"""Run the test API server as a process: python -m tests.apiserver --port N [--state FILE.yaml]."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

import yaml

from tests.apiserver.server import ApiServer


def load_state(server: ApiServer, path: Path) -> int:
    """Load objects from a YAML file: several documents, or Lists with `items`."""
    count = 0
    with path.open() as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            for obj in doc.get("items", []) if str(doc.get("kind", "")).endswith("List") else [doc]:
                server.put(obj)
                count += 1
    return count


async def serve(args: argparse.Namespace) -> None:
    server = ApiServer(bookmark_interval=args.bookmark_interval)
    if args.state:
        load_state(server, Path(args.state))
    await server.start(args.host, args.port)
    print(f"listening on {server.url}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.apiserver")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--state", help="YAML file of objects to load at start")
    p.add_argument("--bookmark-interval", type=float, default=1.0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
