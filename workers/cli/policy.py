"""`vigil policy provenance`: the bank-independent provenance rules, set like a bank.

The rules are stored in Redis (BankStore.set_policy: versioned, audited, in the change stream),
so every matcher applies a change from its next decision, and decisions cached under the old
rules are invalidated. Fields not stored fall back to each worker's VIGIL_PROVENANCE_* settings.
"""
from __future__ import annotations

import argparse

from workers.cli.common import EXIT_OK, CliError, print_json, service_flags, store_from
from workers.cli.provenance import ACTIONS


HELP_ORDER = 35  # where `vigil --help` lists this noun


def cmd_provenance(args: argparse.Namespace) -> int:
    from workers.policy.provenance import ProvenanceRules

    store, settings = store_from(args)
    stored = store.get_policy("provenance") or {}
    change: dict = {}
    for name in ("ai_generated", "invalid", "label"):
        if getattr(args, name) is not None:
            change[name] = getattr(args, name)
    if args.source_type:
        types = dict(stored.get("source_types", {}))
        for item in args.source_type:
            term, sep, action = item.partition("=")
            if not sep or not term.strip():
                raise CliError(f"--source-type wants TERM=ACTION (e.g. compositeSynthetic=review), got {item!r}")
            if action == "unset":
                types.pop(term.strip(), None)
            else:
                types[term.strip()] = action
        change["source_types"] = types
    if args.clear and change:
        raise CliError("--clear removes the stored rules; it takes no other rule flag")
    new = None if args.clear else {**stored, **change}
    try:
        rules = ProvenanceRules.from_settings(settings, new)  # checked before anything is written
    except ValueError as exc:
        raise CliError(str(exc)) from None
    version = None
    if args.clear or change:
        version = store.set_policy("provenance", new)
    out = {"stored": new if (args.clear or change) else (stored or None), "effective": rules.to_json(),
           "version": version if version is not None else store.version()}
    if args.json:
        print_json(out)
        return EXIT_OK
    if version is not None:
        print(f"provenance policy {'cleared' if args.clear else 'stored'} at bank version {version}")
    r = out["effective"]
    print(f"AI-generated media:     {r['ai_generated']}" + (f" (label {r['label']!r})" if r["label"] else ""))
    print(f"invalid C2PA manifests: {r['invalid']}")
    for term, action in sorted(r["source_types"].items()):
        print(f"digitalSourceType {term}: {action}")
    print("stored in Redis: " + (", ".join(sorted(out["stored"])) if out["stored"] else "nothing")
          + "; other fields come from each worker's VIGIL_PROVENANCE_* settings")
    return EXIT_OK


def add_parser(nouns: argparse._SubParsersAction) -> None:
    p = nouns.add_parser("policy", help="bank-independent rules: what provenance (C2PA, AI markers) does to a decision")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    pv = verbs.add_parser(
        "provenance", help="show or set the provenance rules every matcher applies",
        description="Rules act on what a file claims about its origin (see `vigil provenance read`). A missing "
                    "manifest proves nothing and a valid one proves only who signed it, so the default labels "
                    "AI-generated media and blocks nothing; a block bank match always wins. Without flags: show "
                    "the rules in force. Example: vigil policy provenance --ai-generated review --label synthetic",
        epilog="Actions: block, review, allow (label only: the evidence is listed, the decision is not raised), off.")
    service_flags(pv)
    pv.add_argument("--ai-generated", choices=ACTIONS, metavar="ACTION",
                    help="action for media a C2PA action, XMP digitalSourceType or generator marker says a model made")
    pv.add_argument("--invalid", choices=ACTIONS, metavar="ACTION",
                    help="action for a C2PA manifest that fails validation (edited after signing, bad signature)")
    pv.add_argument("--label", help="label the AI-generated rule's evidence carries (e.g. synthetic)")
    pv.add_argument("--source-type", action="append", metavar="TERM=ACTION",
                    help="action for one IPTC digitalSourceType term, replacing the AI rule for it "
                         "(TERM=unset removes one); repeatable")
    pv.add_argument("--actor", help="who this change is attributed to in the audit stream (env VIGIL_ACTOR)")
    pv.add_argument("--clear", action="store_true", help="remove the stored rules: workers' settings apply again")
    pv.add_argument("--json", action="store_true", help="machine-readable output")
    pv.set_defaults(func=cmd_provenance)
