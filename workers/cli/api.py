"""`vigil api`: serve the HTTP API, and manage its tokens (`vigil api token create|list|revoke`)."""
from __future__ import annotations

import argparse

from workers.cli.common import EXIT_OK, EXIT_USAGE, CliError, need, print_json, service_flags, settings_from


HELP_ORDER = 47  # where `vigil --help` lists this noun


def cmd_api(args: argparse.Namespace) -> int:
    from workers.api.server import RefusedBind, serve
    from workers.ops.logs import setup

    settings = settings_from(args).with_overrides(api_host=args.host, api_port=args.port, api_workers=args.workers,
                                                  api_insecure=True if args.insecure else None)
    if args.allow_host:
        settings = settings.with_overrides(fetch_allowed_hosts=tuple(args.allow_host))
    need(settings, "redis")
    setup(settings.log_level)
    print(f"vigil api on http://{settings.api_host}:{settings.api_port}  (docs /docs, OpenAPI /openapi.json)",
          flush=True)
    try:
        serve(settings)
    except RefusedBind as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return EXIT_OK


def _tokens(args: argparse.Namespace):
    import redis

    from workers.api.tokens import TokenStore

    settings = settings_from(args)
    need(settings, "redis")
    return TokenStore(redis.Redis.from_url(settings.redis, decode_responses=True, socket_connect_timeout=5))


def cmd_token_create(args: argparse.Namespace) -> int:
    scopes = [s.strip() for item in args.scope for s in item.split(",") if s.strip()]
    try:
        token, info = _tokens(args).create(args.name, scopes, args.rate, args.burst)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json({"token": token, **info.to_json()})
    else:
        print(token)
        print(f"token {info.name!r}: scopes {', '.join(info.scopes)}. Shown once; only its hash is stored. "
              f"Send it as `Authorization: Bearer <token>`.", flush=True)
    return EXIT_OK


def cmd_token_list(args: argparse.Namespace) -> int:
    rows = [t.to_json() for t in _tokens(args).list()]
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            print(f"{r['name']:<24} {','.join(r['scopes']):<40} rate {r['rate_per_s'] or 'default'}/s")
        if not rows:
            print("no tokens: the API is open on loopback only")
    return EXIT_OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    if not _tokens(args).revoke(args.name):
        raise CliError(f"no token named {args.name!r}")
    print(f"revoked {args.name} (the API stops accepting it within 5 s)")
    return EXIT_OK


def add_parser(nouns: argparse._SubParsersAction) -> None:
    from workers.api.tokens import SCOPES

    api = nouns.add_parser(
        "api", help="serve the HTTP API (HMA-compatible routes and /v1), manage its tokens",
        description="Serves hashing, lookups, uploads and bank admin over HTTP: HMA 2.x routes (/h/hash, "
                    "/m/raw_lookup, /m/lookup, /c/banks ...) so HMA clients work unchanged, and vigil's own /v1 "
                    "with the full decision. Lookups use the same bank index and policy as the matcher, kept "
                    "current from Redis in this process. Docs at /docs, OpenAPI at /openapi.json.",
        epilog="Examples: `vigil api --port 8080` (loopback, open while no token exists); "
               "`vigil api token create --name platform --scope lookup,submit`; "
               "`vigil api --host 0.0.0.0` (needs a token, or --insecure). Exit codes: 0 ok, 2 bad usage or a "
               "refused bind, 3 Redis unreachable.")
    service_flags(api, media=True)
    api.add_argument("--host", help="address to bind (default 127.0.0.1; env VIGIL_API_HOST)")
    api.add_argument("--port", type=int, help="port (default 8080; env VIGIL_API_PORT)")
    api.add_argument("--workers", type=int, help="worker processes (default 1; env VIGIL_API_WORKERS); each holds "
                                                 "its own copy of the bank index")
    api.add_argument("--insecure", action="store_true",
                     help="serve a non-loopback address even with no token (anyone reaching it has every scope)")
    api.add_argument("--allow-host", action="append", metavar="HOST",
                     help="host media URLs may be fetched from (and its subdomains); repeatable "
                          "(env VIGIL_FETCH_ALLOWED_HOSTS)")
    api.set_defaults(func=cmd_api)
    verbs = api.add_subparsers(dest="verb", metavar="VERB")
    token = verbs.add_parser("token", help="create, list and revoke API tokens",
                             description="Tokens are stored hashed in Redis (vigil:api:tokens).")
    tverbs = token.add_subparsers(dest="tverb", metavar="VERB", required=True)

    def tcmd(name: str, help_: str, func) -> argparse.ArgumentParser:
        t = tverbs.add_parser(name, help=help_, description=help_)
        t.add_argument("--redis", metavar="URL", help="Redis URL (env VIGIL_REDIS)")
        t.add_argument("--json", action="store_true", help="machine-readable output")
        t.set_defaults(func=func)
        return t

    t = tcmd("create", "create a token and print it once", cmd_token_create)
    t.add_argument("--name", required=True, help="who uses it; bank writes are audited as api:<name>")
    t.add_argument("--scope", action="append", required=True, metavar="SCOPE",
                   help=f"one or more of {', '.join(SCOPES)} (repeat, or comma-separate)")
    t.add_argument("--rate", type=float, help="requests/s sustained (default VIGIL_API_RATE_PER_S, 50)")
    t.add_argument("--burst", type=int, help="requests allowed at once (default VIGIL_API_BURST, 100)")
    tcmd("list", "list tokens (names and scopes; never the tokens)", cmd_token_list)
    t = tcmd("revoke", "revoke a token by name", cmd_token_revoke)
    t.add_argument("name")
