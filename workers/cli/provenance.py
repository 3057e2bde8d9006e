"""`vigil provenance read FILE...`: what files claim about their origin, as the hasher reads it.
The rules acting on it are `vigil policy provenance` (workers/cli/policy.py); the matcher's
`--provenance-*` flags (rule_flags) set the defaults those stored rules override."""
from __future__ import annotations

import argparse
from pathlib import Path

from workers.cli.common import EXIT_OK, CliError, print_json, settings_from

ACTIONS = ("block", "review", "allow", "off")


HELP_ORDER = 55  # where `vigil --help` lists this noun


def rule_flags(p: argparse.ArgumentParser) -> None:
    """`vigil worker matcher`'s provenance rule flags: the defaults `vigil policy provenance` overrides."""
    p.add_argument("--provenance-ai-generated", choices=ACTIONS, metavar="ACTION",
                   help="action for media that says a model made it: block | review | allow (label only) | off "
                        "(env VIGIL_PROVENANCE_AI_GENERATED, default allow)")
    p.add_argument("--provenance-invalid", choices=ACTIONS, metavar="ACTION",
                   help="action for a C2PA manifest that fails validation, e.g. edited after signing "
                        "(env VIGIL_PROVENANCE_INVALID, default off)")
    p.add_argument("--provenance-label", metavar="LABEL",
                   help="label of the AI-generated rule's evidence (env VIGIL_PROVENANCE_LABEL, default synthetic)")


def settings_with_rules(args: argparse.Namespace):
    settings = settings_from(args)
    return settings.with_overrides(provenance_ai_generated=getattr(args, "provenance_ai_generated", None),
                                   provenance_invalid=getattr(args, "provenance_invalid", None),
                                   provenance_label=getattr(args, "provenance_label", None))


def cmd_read(args: argparse.Namespace) -> int:
    from workers.media.probe import image_signature
    from workers.signals.provenance import read_provenance, read_provenance_file

    settings = settings_from(args)
    anchors = args.trust_anchors or settings.provenance_trust_anchors
    if anchors and not Path(anchors).is_file():
        raise CliError(f"no trust anchors file {anchors}")
    records = {}
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            raise CliError(f"no such file: {name}")
        with open(path, "rb") as fh:
            video = image_signature(fh.read(16)) is None  # not an image: read as a video container
        if video or path.stat().st_size > settings.max_media_bytes:
            records[name] = read_provenance_file(path, anchors)
        else:
            records[name] = read_provenance(path.read_bytes(), anchors)
    if args.json:
        print_json(records)
        return EXIT_OK
    for name, rec in records.items():
        types = ", ".join(rec.get("digital_source_types", [])) or "-"
        claim = rec.get("c2pa") or {}
        print(f"{name}: c2pa {rec['state']}{' (' + ', '.join(rec['problems']) + ')' if rec.get('problems') else ''}; "
              f"ai_generated {str(rec['ai_generated']).lower()}; digitalSourceType {types}")
        if claim:
            print(f"  signed by {claim.get('signer') or '?'} with {claim.get('claim_generator') or '?'}")
        for m in rec.get("markers", []):
            print(f"  marker {m['signal']} {m['field']}={m['value']}")
    return EXIT_OK


def add_parser(nouns: argparse._SubParsersAction) -> None:
    p = nouns.add_parser(
        "provenance", help="what files claim about their origin: C2PA Content Credentials, AI-generation markers",
        description="Provenance is a claim, not a proof: a missing manifest proves nothing (re-encodes strip it) "
                    "and a valid one proves only who signed it. The rules acting on it: `vigil policy provenance`.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    r = verbs.add_parser("read", help="print the provenance record of files, as the hasher reads it",
                         description="Read C2PA Content Credentials and XMP/PNG/EXIF AI-generation markers. "
                                     "Example: vigil provenance read generated.jpg --json")
    r.add_argument("files", nargs="+", metavar="FILE")
    r.add_argument("--trust-anchors", metavar="PEM", help="trust anchors for 'trusted' (env VIGIL_PROVENANCE_TRUST_ANCHORS)")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=cmd_read)
