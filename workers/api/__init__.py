"""The HTTP API (`vigil api`): hash, lookup, submit and bank admin over HTTP.

Two route sets over one service: HMA 2.x's (`/h`, `/m`, `/c`, `/status`; `hma_*.py`), so an HMA
client works unchanged, and vigil's own `/v1` (`v1.py`) with the full decision and evidence.
Lookups search the same BankIndex and policy as the matcher, kept current in this process."""
