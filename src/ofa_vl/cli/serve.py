"""``ofa serve``: the HTTP API, its limits the flags of :class:`~ofa_vl.serve.config.ServeConfig`."""

from __future__ import annotations

import argparse

from ..arguments import add_dataclass_args, from_args
from .common import command, runtime, runtime_args


def _serve_args(p: argparse.ArgumentParser) -> None:
    from ..serve.config import ServeConfig
    from ..zoo import DEFAULT_MODEL

    p.add_argument(
        "--model",
        action="append",
        help=f"zoo name or checkpoint path, repeatable, the first is the default ({DEFAULT_MODEL})",
    )
    p.add_argument("--tokenizer", help="tokenizer directory or hub id (all models)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8000)
    add_dataclass_args(p, ServeConfig)
    p.add_argument("--replicas", type=int, help="model replicas (one per device; default 1)")
    p.add_argument("--devices", help="a replica per device: cuda:0,cuda:1 ... or auto (every GPU)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: Ray Serve")
    runtime_args(p, "compile", "backend")


@command("serve", _serve_args)
def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API and the web page (needs the serve extra)."""
    from ..serve import ServeConfig, serve
    from ..zoo import DEFAULT_MODEL

    config = from_args(ServeConfig, args)
    load = {"tokenizer": args.tokenizer, **runtime(args, "compile", "backend")}
    models = args.model or [DEFAULT_MODEL]
    if args.engine == "ray" or args.replicas or args.devices:  # issue 28: serve/replicas.py
        from ..serve.ray_engine import serve_ray
        from ..serve.replicas import replica_devices, replicated_app, serve_replicas

        if args.engine == "ray":
            serve_ray(models, host=args.host, port=args.port, replicas=args.replicas,
                      config=config, **load)  # fmt: skip
        else:
            devices = replica_devices(args.devices, args.replicas)
            serve_replicas(replicated_app(models, devices, config, **load), args.host, args.port)
        return 0
    serve(models, device=args.device, host=args.host, port=args.port, config=config, **load)
    return 0
