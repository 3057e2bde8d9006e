"""HMA's approach to raw_lookup, minimal, for benchmarks/bench_api.py to measure vigil beside:
a Flask route over python-threatexchange's PDQ index (the faiss index HMA's matcher loads),
served by gunicorn as HMA deploys it. Codes come from the .npy file in HMA_BENCH_CODES, row i
answering content id HMA_BENCH_IDS[i] (the same ids vigil's API answers)."""
from __future__ import annotations

import os

import numpy as np
from flask import Flask, abort, request


def create() -> Flask:
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex

    codes = np.load(os.environ["HMA_BENCH_CODES"])
    ids = np.load(os.environ["HMA_BENCH_IDS"])
    index = PDQIndex.build((c.tobytes().hex(), int(i)) for c, i in zip(codes, ids))
    app = Flask("hma-bench")

    @app.get("/m/raw_lookup")
    def raw_lookup():
        signal = request.args.get("signal", "")
        if request.args.get("signal_type") != "pdq" or len(signal) != 64:
            abort(400)
        return {"matches": [m.metadata for m in index.query(signal)]}

    @app.get("/status")
    def status():
        return "I-AM-ALIVE"

    return app
