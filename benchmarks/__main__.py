"""`make bench` / `python -m benchmarks`: run every benchmarks/bench_*.py and write one report.

Each module exposes `run() -> str` (markdown), optionally `run(quick=...)`. Each runs in its own
process, so one module's thread settings (cv2.setNumThreads, BLAS limits) or crash cannot
skew or stop the others; a failure is reported in its section and the rest still run.
"""
from __future__ import annotations

import argparse
import inspect
import importlib
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def _select(names: list[str], only: list[str] | None) -> list[str]:
    if not only:
        return names
    wanted = {o if o.startswith("bench_") else f"bench_{o}" for o in only}
    unknown = wanted - set(names)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(names)}")
    return [n for n in names if n in wanted]


def run_child(name: str, quick: bool, out: Path) -> int:
    """In the child process: import one module, call run(), write its markdown to `out`."""
    module = importlib.import_module(f"benchmarks.{name}")
    run = getattr(module, "run", None)
    if run is None:
        raise SystemExit(f"benchmarks.{name} has no run()")
    kwargs = {"quick": True} if quick and "quick" in inspect.signature(run).parameters else {}
    text = run(**kwargs)
    if not isinstance(text, str):
        raise TypeError(f"run() returned {type(text).__name__}, not str")
    out.write_text(text)
    return 0


def run_module(name: str, quick: bool, timeout: float) -> tuple[str, float, str]:
    """(status, seconds, markdown or the error) for one module, in a fresh interpreter."""
    OUT.mkdir(parents=True, exist_ok=True)
    part = OUT / f".{name}.md.part"
    part.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks", "--child", name, "--child-out", str(part)] + (["--quick"] if quick else [])
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0, f"did not finish within {timeout:.0f}s"
    seconds = time.monotonic() - t0
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0 or not part.exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        return "failed", seconds, f"exit code {proc.returncode}\n\n```\n{tail}\n```"
    text = part.read_text()
    part.unlink()
    return "ok", seconds, text


def write_report(results: list[tuple[str, str, float, str]], argv: list[str], quick: bool) -> Path:
    from benchmarks.report import environment_markdown

    lines = ["# vigil benchmarks", "",
             f"Command: `python -m benchmarks {' '.join(argv)}`".rstrip() + ("  (quick mode: smaller samples)" if quick else ""),
             "", environment_markdown(), "", "## Modules", "", "| module | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {status} | {seconds:.0f} |" for name, status, seconds, _ in results]
    for name, status, _, text in results:
        lines.append("")
        if status != "ok":
            lines += [f"## {name}: {status.upper()}", "", text]
            continue
        body = text.strip()
        lines.append(body if body.startswith("#") else f"## {name}\n\n{body}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this module (bench_pipeline or pipeline); repeatable")
    p.add_argument("--quick", action="store_true", help="pass quick=True to modules whose run() accepts it")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per module before it is stopped")
    p.add_argument("--list", action="store_true", help="list the modules and exit")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return run_child(args.child, args.quick, args.child_out)
    names = _select(discover(), args.only)
    if args.list:
        print("\n".join(names))
        return 0
    results = []
    for name in names:
        print(f"== {name} ...", file=sys.stderr, flush=True)
        try:
            status, seconds, text = run_module(name, args.quick, args.timeout)
        except Exception:  # a bug here must not lose the other modules' results
            status, seconds, text = "failed", 0.0, f"```\n{traceback.format_exc()}\n```"
        print(f"== {name}: {status} in {seconds:.0f}s", file=sys.stderr, flush=True)
        results.append((name, status, seconds, text))
    path = write_report(results, argv, args.quick)
    print(path)
    return 0 if all(r[1] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
