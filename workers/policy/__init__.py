"""Evidence to decision, in one package: `banks` turns bank matches into block / review / allow,
and `provenance` folds in what the file claims about its origin (C2PA, AI-generation markers).
Kept apart from matching so the rules are easy to read and to test."""
from workers.policy.banks import STRENGTH, decide  # noqa: F401  (the names callers use)
