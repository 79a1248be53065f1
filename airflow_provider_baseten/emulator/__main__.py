"""``python -m airflow_provider_baseten.emulator``: serve a world on loopback until Ctrl-C (or SIGTERM).

Prints the URL, the API key and a ``curl`` line, then one line ``ready`` once it serves.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.world import World


def _parser() -> argparse.ArgumentParser:
    from airflow_provider_baseten.emulator.world import DEMO_API_KEY

    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_baseten.emulator",
        description="A local Baseten: routes on the Host header like api.baseten.co, model-<id>.api.baseten.co, ...",
    )
    parser.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--api-key", default=DEMO_API_KEY, help=f"accepted API key (default: {DEMO_API_KEY})")
    parser.add_argument("--world", help="world JSON file (default: the built-in demo world)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="emulated seconds per wall second")
    parser.add_argument(
        "--visible-floor",
        type=float,
        default=None,
        help="wall seconds a scale-down delay and a status retention last at least when time is scaled (default 120)",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser


def try_line(world: World, url: str, api_key: str) -> str | None:
    """A ``curl`` line calling a model this world has: ``echo01`` if there, else the first whose production
    deployment is ``ACTIVE``, else the first with any production deployment; ``None`` when no model has one."""
    production = {
        model.id: deployment.status
        for model in world.models.values()
        for deployment in model.deployments
        if deployment.environment == "production"
    }
    if not production:
        return None
    active = [model_id for model_id, status in production.items() if status == "ACTIVE"]
    model_id = "echo01" if "echo01" in production else (active or list(production))[0]
    return (
        f"curl -s {url}/production/predict -H 'Host: model-{model_id}.api.baseten.co' "
        f"-H 'Authorization: Api-Key {api_key}' -d '{{\"text\": \"I love this\"}}'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = _parser().parse_args(argv)
    from airflow_provider_baseten.emulator.server import Emulator
    from airflow_provider_baseten.emulator.world import World

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    world = World.from_json(args.world) if args.world else World.default()
    floor = {} if args.visible_floor is None else {"visible_floor": args.visible_floor}
    emulator = Emulator(
        world, api_key=args.api_key, time_scale=args.time_scale, port=args.port, host=args.host, **floor
    )
    emulator.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"Baseten emulator on {emulator.url} (time scale {args.time_scale:g})", flush=True)
    print(f"API key: {args.api_key}", flush=True)
    line = try_line(world, emulator.url, args.api_key)
    print(f"Try: {line}" if line else "Try: this world has no model with a production deployment.", flush=True)
    print(f"ready in {time.monotonic() - started:.2f} s", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
