"""Deployment artifacts: Dockerfile, compose stack, Kubernetes manifests, alert rules, dashboard.

Docker does not run here, so the image and compose file are checked structurally (with the
compose spec parser and Docker's own Dockerfile parser) and cross-checked against the code; the
health checks they run are executed for real against vigil's metrics server. Prometheus rules
are checked and unit-tested with promtool; Kubernetes manifests are validated against the
Kubernetes JSON schemas (kubernetes-validate) and the KEDA objects against the fields KEDA documents.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

sys.path.insert(0, str(Path(__file__).resolve().parent))
import promql  # noqa: E402

from topics import names as topic_names  # noqa: E402
from workers.ops import metrics as vigil_metrics  # noqa: E402
from workers.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S_VERSION = "1.30"
WORKER_JOBS = {"hasher": "vigil-hasher", "matcher": "vigil-matcher"}

# Series Prometheus makes itself, and the standard process/runtime collectors.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                        "scrape_samples_post_metric_relabeling", "scrape_series_added"}
STANDARD_PREFIXES = ("process_", "python_")
# Metrics the dashboard shows that another piece of work is adding to workers/ops/metrics.py.
# Remove a name from here once workers/ops/metrics.py defines it.
PENDING_METRICS: set[str] = set()


# ---------------------------------------------------------------------------------- helpers

def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, ("promtool not found on PATH: the alert rules cannot be checked. "
                 "Install it with `apt-get install -y prometheus` (Debian ships promtool in that package).")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@functools.lru_cache(maxsize=None)
def k8s_objects() -> list[tuple[str, dict]]:
    """Every object in deploy/k8s (parsed once; callers must not modify them)."""
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        out.extend((f.name, d) for d in load_yaml_docs(f))
    return out


def pod_spec(obj: dict) -> dict:
    """The pod template's spec of a Deployment or Job, or of a CronJob's job template ({} if none)."""
    spec = obj.get("spec", {})
    return spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})


def k8s_find(kind: str, name: str | None = None) -> list[dict]:
    return [d for _, d in k8s_objects() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(kind: str, name: str) -> dict:
    found = k8s_find(kind, name)
    assert len(found) == 1, f"expected one {kind} {name!r} in deploy/k8s, found {len(found)}"
    return found[0]


def quantity(q: str | int) -> float:
    """Kubernetes resource quantity -> number (cores or bytes)."""
    s = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * units[suffix]
    return float(s)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile_commands() -> list:
    return list(dockerfile.parse_file(str(REPO / "Dockerfile")))


def stages() -> list[list]:
    out: list[list] = []
    for c in dockerfile_commands():
        if c.cmd.upper() == "FROM":
            out.append([])
        if out:
            out[-1].append(c)
    return out


def env_pairs(cmd) -> dict[str, str]:
    v = list(cmd.value)
    return dict(zip(v[0::2], v[1::2]))


def exported_sample_names() -> set[str]:
    """Every series name the collectors defined in workers/ops/metrics.py can export."""
    from prometheus_client.metrics import MetricWrapperBase

    names: set[str] = set()
    for obj in vars(vigil_metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        for fam in obj.describe():
            n = fam.name
            if fam.type == "counter":
                names |= {n + "_total", n + "_created"}
            elif fam.type == "histogram":
                names |= {n + "_bucket", n + "_sum", n + "_count", n + "_created"}
            elif fam.type == "summary":
                names |= {n, n + "_sum", n + "_count", n + "_created"}
            elif fam.type == "info":
                names.add(n + "_info")
            else:
                names.add(n)
    return names


def metric_name_problem(name: str, exported: set[str]) -> str | None:
    if name in exported or name in PROMETHEUS_SYNTHETIC or name.startswith(STANDARD_PREFIXES):
        return None
    if name in PENDING_METRICS:
        return None
    return f"{name} is not exported by workers/ops/metrics.py"


def serve_metrics(ready: bool):
    health = vigil_metrics.Health()
    health.checks["test"] = lambda: ready
    server = vigil_metrics.serve("127.0.0.1", 0, health)
    return server, server.server_address[1]


def run_probe(argv: list[str], env: dict[str, str]) -> int:
    """Run a container health check command (exec form) here, with this interpreter as `python`."""
    assert argv[0] == "python", argv
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, *argv[1:]], env=full_env, capture_output=True, timeout=30).returncode


def dockerignore_included(path: str) -> bool:
    """Docker's .dockerignore semantics: last matching pattern wins; a pattern also matches a
    path's parent directories; `!` re-includes; `**` spans directories."""
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:] if neg else line
        pat = os.path.normpath(pat.strip("/"))
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        patterns.append((neg, re.compile(rx + r"\Z")))
    parts = path.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    included = True
    for neg, rx in patterns:
        if any(rx.match(p) for p in prefixes):
            included = neg
    return included


# ---------------------------------------------------------------------------------- Dockerfile

def test_dockerfile_is_multi_stage_on_python_311_slim():
    st = stages()
    assert len(st) >= 2, "Dockerfile must be multi-stage (builder + runtime)"
    args = {}
    for c in dockerfile_commands():
        if c.cmd.upper() == "ARG" and "=" in c.value[0]:
            k, v = c.value[0].split("=", 1)
            args[k] = v
    bases = []
    for s in st:
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), s[0].value[0])
        bases.append(image)
    assert bases[-1] == "python:3.11-slim", f"runtime stage must be python:3.11-slim, got {bases[-1]}"
    stage_names = [s[0].value[2] for s in st if len(s[0].value) == 3 and s[0].value[1].upper() == "AS"]
    runtime_copies = [c for c in st[-1] if c.cmd.upper() == "COPY" and any(f.startswith("--from=") for f in c.flags)]
    assert runtime_copies, "the runtime stage must COPY --from the builder"
    for c in runtime_copies:
        src = next(f for f in c.flags if f.startswith("--from=")).split("=", 1)[1]
        assert src in stage_names[:-1], f"COPY --from={src} does not name an earlier stage ({stage_names})"
    # The runtime image gets no compiler: builds happen in the builder.
    runtime_runs = " ".join(c.value[0] for c in st[-1] if c.cmd.upper() == "RUN")
    assert "build-essential" not in runtime_runs and "gcc" not in runtime_runs


def test_dockerfile_runs_as_non_root_numeric_user():
    users = [c for c in stages()[-1] if c.cmd.upper() == "USER"]
    assert users, "runtime stage has no USER: the container would run as root"
    user = users[-1].value[0]
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user}: use a numeric uid so Kubernetes runAsNonRoot can verify it"
    assert int(uid) != 0
    # The Kubernetes pods run as the same uid.
    for kind in WORKER_JOBS.values():
        pod = one("Deployment", kind)["spec"]["template"]["spec"]
        assert str(pod["securityContext"]["runAsUser"]) == uid


def test_dockerfile_default_command_and_environment():
    final = stages()[-1]
    cmd = [c for c in final if c.cmd.upper() == "CMD"][-1]
    assert cmd.json and list(cmd.value) == ["vigil", "worker", "hasher"]
    env: dict[str, str] = {}
    for c in final:
        if c.cmd.upper() == "ENV":
            env.update(env_pairs(c))
    assert env["VIGIL_METRICS_HOST"] == "0.0.0.0", "in a container the metrics server must listen on all interfaces"
    expose = [c.value[0] for c in final if c.cmd.upper() == "EXPOSE"]
    assert expose == [env["VIGIL_METRICS_PORT"]]
    # Every VIGIL_* the image sets is a real setting and parses.
    vigil_env = {k: v for k, v in env.items() if k.startswith("VIGIL_")}
    fields = {f"VIGIL_{f.upper()}" for f in Settings.__dataclass_fields__}
    assert set(vigil_env) <= fields, set(vigil_env) - fields
    s = Settings.from_env(vigil_env)
    assert s.metrics_port == int(env["VIGIL_METRICS_PORT"]) and s.media_roots == ("/media",)
    # `vigil` resolves: the package declares that console script.
    import tomllib
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "vigil" in scripts


def test_dockerfile_copies_only_what_exists_and_is_in_the_build_context():
    checked = 0
    for s in stages():
        for c in s:
            if c.cmd.upper() != "COPY" or any(f.startswith("--from=") for f in c.flags):
                continue
            for src in c.value[:-1]:
                matches = glob.glob(src, root_dir=REPO)
                if not any(ch in src for ch in "*?["):
                    assert matches, f"COPY {src}: no such file in the repository"
                for m in matches:
                    assert dockerignore_included(m), f"COPY {m}: excluded from the build context by .dockerignore"
                    checked += 1
    assert checked >= 3
    # The package sources go in; caches and build output stay out.
    assert dockerignore_included("workers/ops/metrics.py")
    assert dockerignore_included("topics/schemas/upload.json")
    assert not dockerignore_included("workers/__pycache__/metrics.cpython-311.pyc")
    assert not dockerignore_included(".venv/bin/python")
    assert not dockerignore_included("tests/test_deploy.py")


def test_dockerfile_healthcheck_probes_healthz_for_real():
    hc = [c for c in stages()[-1] if c.cmd.upper() == "HEALTHCHECK"]
    assert hc, "runtime stage has no HEALTHCHECK"
    argv = list(hc[-1].value)
    assert argv[0] == "CMD" and hc[-1].json, "HEALTHCHECK must use the exec form (no shell, no curl)"
    argv = argv[1:]
    assert "/healthz" in " ".join(argv)
    server, port = serve_metrics(ready=False)  # liveness does not depend on readiness
    try:
        assert run_probe(argv, {"VIGIL_METRICS_PORT": str(port)}) == 0
    finally:
        server.shutdown()
        server.server_close()
    # Nothing listening: the check fails.
    assert run_probe(argv, {"VIGIL_METRICS_PORT": str(port)}) != 0


# ---------------------------------------------------------------------------------- compose

def test_compose_file_is_valid_compose_spec():
    try:
        parsed = PyCompose.from_yaml(COMPOSE.read_text())
    except ValueError as exc:
        pytest.fail(f"deploy/docker-compose.yml does not follow the compose spec: {exc}")
    assert set(parsed.service_names()) >= {"kafka", "redis", "topic-init", "hasher", "matcher", "prometheus", "grafana"}


def test_compose_references_resolve():
    c = compose()
    services, volumes = c["services"], set(c.get("volumes") or {})
    vigil = [s for s in services.values() if s.get("image", "").startswith("vigil:")]
    assert len(vigil) >= 3 and all("build" in s for s in vigil), "every vigil service builds the image"
    assert len({s["image"] for s in vigil}) == 1 and len({json.dumps(s["build"]) for s in vigil}) == 1
    for name, s in services.items():
        assert "image" in s or "build" in s, f"{name}: no image"
        image = s["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"
        if "build" in s:
            ctx = (DEPLOY / s["build"]["context"]).resolve()
            assert (ctx / s["build"].get("dockerfile", "Dockerfile")).is_file()
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on undefined service {dep}"
            condition = cond["condition"]
            target = services[dep]
            if condition == "service_healthy":
                assert "healthcheck" in target and not target["healthcheck"].get("disable"), \
                    f"{name} waits for {dep} to be healthy but {dep} has no healthcheck"
            if condition == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dep} is one-shot: it must not restart"
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith((".", "/")):
                assert (DEPLOY / src).exists(), f"{name}: bind mount source {src} does not exist"
            else:
                assert src in volumes, f"{name}: volume {src} is not declared"


def test_compose_workers_replicas_env_and_media():
    c = compose()
    services = c["services"]
    fields = {f"VIGIL_{f.upper()}" for f in Settings.__dataclass_fields__}
    kafka_env = services["kafka"]["environment"]
    advertised = {a.split("://", 1)[1] for a in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name in ("topic-init", "hasher", "matcher"):
        s = services[name]
        env = {k: str(v) for k, v in s["environment"].items()}
        assert set(env) <= fields, f"{name}: unknown settings {set(env) - fields}"
        settings = Settings.from_env(env)
        assert settings.kafka in advertised, f"{name}: VIGIL_KAFKA={settings.kafka} is not an advertised listener"
        assert settings.redis.startswith("redis://redis:"), settings.redis
        assert settings.metrics_host == "0.0.0.0"
    for kind in WORKER_JOBS:
        s = services[kind]
        assert s["command"] == ["vigil", "worker", kind]
        assert s["deploy"]["replicas"] >= 2
        assert "container_name" not in s and "ports" not in s, f"{kind}: replicas cannot share a name or host port"
        assert s["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    # Hashers read media read-only at the media root; matchers never see media.
    roots = Settings.from_env({k: str(v) for k, v in services["hasher"]["environment"].items()}).media_roots
    mounts = [v.split(":") for v in services["hasher"]["volumes"]]
    assert any(m[1] == roots[0] and m[2:] == ["ro"] for m in mounts), mounts
    assert "volumes" not in services["matcher"]
    assert services["topic-init"]["command"] == ["vigil", "topics", "create"]
    assert services["topic-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_kafka_kraft_and_redis_aof():
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert not any("ZOOKEEPER" in k for k in env), "KRaft mode: no ZooKeeper"
    mounts = dict(v.split(":")[:2] for v in kafka["volumes"])
    assert env["KAFKA_LOG_DIRS"] in mounts.values(), "Kafka's log dir must be on a volume"
    redis = services["redis"]
    cmd = redis["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])
    assert not any("zookeeper" in n for n in services)


def test_compose_readiness_healthchecks_probe_readyz_for_real():
    services = compose()["services"]
    for kind in WORKER_JOBS:
        test = services[kind]["healthcheck"]["test"]
        assert test[0] == "CMD" and "/readyz" in " ".join(test)
        env = {k: str(v) for k, v in services[kind]["environment"].items()}
        for ready, expected_ok in ((True, True), (False, False)):
            server, port = serve_metrics(ready=ready)
            try:
                rc = run_probe(test[1:], {**env, "VIGIL_METRICS_PORT": str(port)})
            finally:
                server.shutdown()
                server.server_close()
            assert (rc == 0) == expected_ok, f"{kind} healthcheck with ready={ready} exited {rc}"


def test_compose_prometheus_and_grafana_wiring():
    services = compose()["services"]
    prom = services["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"]}
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_path = Path(config_flag.split("=", 1)[1])
    assert (DEPLOY / mounts[str(config_path.parent)]).resolve() == PROM.resolve()
    config = yaml.safe_load((PROM / config_path.name).read_text())
    for rf in config["rule_files"]:
        assert (PROM / rf).is_file(), f"prometheus.yml loads {rf}, which is not in deploy/prometheus/"
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    for kind, job in WORKER_JOBS.items():
        sd = jobs[job]["dns_sd_configs"][0]
        assert sd["names"] == [kind], f"job {job} must resolve the {kind} service (every replica)"
        port = int(services[kind]["environment"]["VIGIL_METRICS_PORT"])
        assert sd["port"] == port
    graf = services["grafana"]
    gmounts = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in graf["volumes"] if v.startswith(".")}
    assert gmounts["/etc/grafana/provisioning"] == (DEPLOY / "grafana" / "provisioning").resolve()
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/vigil.yml").read_text())["providers"][0]
    assert gmounts[provider["options"]["path"]] == (DEPLOY / "grafana" / "dashboards").resolve()
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"


# ---------------------------------------------------------------------------------- Prometheus

def test_promtool_check_rules():
    r = promtool("check", "rules", str(PROM / "alerts.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_for_every_alert():
    r = promtool("test", "rules", str(PROM / "alerts_test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_has_a_firing_and_a_quiet_test_case():
    alerts = {x.name for x in promql.rule_expressions()}
    fires, quiet = set(), set()
    for t in yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - fires == set(), f"alerts never tested firing: {alerts - fires}"
    assert alerts - quiet == set(), f"alerts never tested not firing: {alerts - quiet}"
    expected = {"VigilConsumerLagGrowing", "VigilUploadDecisionLatencySLO", "VigilLiveDecisionLatencySLO",
                "VigilDeadLetterSpike", "VigilBankStale", "VigilNoDecisions", "VigilWorkerDown"}
    assert expected <= alerts


def test_alert_rules_carry_severity_and_documentation():
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    for rule in (r for g in doc["groups"] for r in g["rules"]):
        assert rule["labels"]["severity"] in {"page", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    slo = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    assert "10 seconds" in slo["VigilUploadDecisionLatencySLO"]["annotations"]["description"]
    assert "1 second" in slo["VigilLiveDecisionLatencySLO"]["annotations"]["description"]


def test_promtool_check_compose_prometheus_config():
    r = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_kubernetes_scrape_config(tmp_path):
    """Debian's promtool is built without Kubernetes service discovery, so the k8s config is
    checked with its discovery swapped for a static target (everything else as written) and the
    discovery block is checked against the pod manifests by hand."""
    config = yaml.safe_load((PROM / "kubernetes-scrape.yml").read_text())
    job = config["scrape_configs"][0]
    sd = job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["localhost:9400"]}]
    for rf in config["rule_files"]:
        shutil.copy(PROM / rf, tmp_path / rf)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    r = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert sd[0]["role"] == "pod" and sd[0]["namespaces"]["names"] == [one("Namespace", "vigil")["metadata"]["name"]]
    # The relabelling reads annotations and labels the pods really carry, and sets job as the alerts expect.
    relabel = {tuple(r["source_labels"]): r for r in job["relabel_configs"]}
    for kind, job_name in WORKER_JOBS.items():
        tmpl = one("Deployment", job_name)["spec"]["template"]
        assert tmpl["metadata"]["annotations"]["prometheus.io/scrape"] == relabel[
            ("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]["regex"]
        port_names = {p["name"] for p in tmpl["spec"]["containers"][0]["ports"]}
        assert relabel[("__meta_kubernetes_pod_container_port_name",)]["regex"] in port_names
        assert tmpl["metadata"]["labels"]["app.kubernetes.io/name"] == job_name
    assert relabel[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]["target_label"] == "job"


# ---------------------------------------------------------------------------------- PromQL

def test_promql_extraction_finds_every_query():
    exprs = promql.all_expressions()
    panels = [p for p in promql.dashboard_panels() if p.get("type") != "row"]
    assert len(promql.dashboard_expressions()) >= len(panels)
    assert len(promql.rule_expressions()) == 10
    assert all(e.expr for e in exprs)
    assert promql.selectors('sum by (a) (rate(x{a="}b", c=~"$v"}[5m] offset 1h)) / on (a) group_left y > 1e3 '
                            'and histogram_quantile(0.9, z_bucket) unless absent(w:rec)') == \
        ['x{a="}b", c=~"$v"}', "y", "z_bucket", "w:rec"]
    assert promql.metric_names('deriv(sum without (p) (lag)[10m:1m]) > 0 or on () vector(0)') == {"lag"}
    e = promql.Expr("dashboard", "t", "rate(x[$__rate_interval]) + rate(x[${__interval}])")
    assert e.render(rate_interval="2m", interval="30s") == "rate(x[2m]) + rate(x[30s])"


def test_every_dashboard_query_parses(tmp_path):
    """promtool has no offline parser for a bare expression, but it parses recording rules: so
    every dashboard query (with Grafana's variables rendered) becomes one and is checked."""
    rules = [{"record": f"vigil:dashboard_query_{i}", "expr": e.render()}
             for i, e in enumerate(promql.dashboard_expressions())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_metric_in_dashboard_and_rules_is_exported():
    exported = exported_sample_names()
    assert "vigil_decision_latency_seconds_bucket" in exported and "vigil_decisions_total" in exported
    problems = []
    for e in promql.all_expressions():
        for name in promql.metric_names(e.expr):
            p = metric_name_problem(name, exported)
            if p:
                problems.append(f"{e.source} / {e.name}: {p}")
    assert not problems, "\n".join(problems)
    # Labels the queries select on are labels those metrics have.
    assert "source" in vigil_metrics.DECISION_LATENCY._labelnames
    assert "stage" in vigil_metrics.STAGE_DURATION._labelnames
    assert "code" in vigil_metrics.DEAD_LETTERS._labelnames
    assert {"group", "topic", "partition"} <= set(vigil_metrics.CONSUMER_LAG._labelnames)
    assert "topic" in vigil_metrics.EVENTS._labelnames
    assert "signal" in vigil_metrics.BANK_ENTRIES._labelnames
    # Topic names in queries are real topics.
    topics = {t.name for t in topic_names.all_topics()}
    for e in promql.all_expressions():
        for t in re.findall(r'topic="([^"]+)"', e.expr):
            assert t in topics, f"{e.name}: unknown topic {t}"


def test_pending_metrics_are_only_ones_not_yet_defined():
    """PENDING_METRICS excuses metrics another change is adding; once defined, drop them from it."""
    exported = exported_sample_names()
    used = {n for e in promql.all_expressions() for n in promql.metric_names(e.expr)}
    assert PENDING_METRICS <= used
    stale = PENDING_METRICS & exported
    assert not stale, f"{stale} now exist in workers/ops/metrics.py: remove them from PENDING_METRICS"


# ---------------------------------------------------------------------------------- Grafana

def test_dashboard_structure():
    dash = json.loads((DEPLOY / "grafana/dashboards/vigil.json").read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    panels = promql.dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{p['title']} overflows the 24-column grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["targets"], f"{p['title']} has no query"
        for ds in [p.get("datasource")] + [t.get("datasource") for t in p["targets"]]:
            assert ds and ds["type"] == "prometheus"
            for v in promql.grafana_variables(ds["uid"]):
                assert v in variables
        for t in p["targets"]:
            for v in promql.grafana_variables(t["expr"]):
                assert v in variables or v in promql.GRAFANA_BUILTINS, f"{p['title']}: undefined ${v}"
    titles = " | ".join(p["title"] for p in panels).lower()
    for needed in ("decisions per second", "latency", "stage", "lag", "dead letters", "bank entries",
                   "staleness", "live streams"):
        assert needed in titles, f"dashboard has no panel for {needed}"
    # The panels the brief names group by the right labels.
    exprs = " ".join(e.expr for e in promql.dashboard_expressions())
    for needle in ("sum by (decision)", "sum by (source, le)", "sum by (stage", "sum by (code)",
                   "max by (signal)", "vigil_live_active_streams"):
        assert needle in exprs, needle


# ---------------------------------------------------------------------------------- Kubernetes

def test_k8s_manifests_validate_against_kubernetes_schemas():
    validated = 0
    for fname, doc in k8s_objects():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{fname}: {doc['kind']} {doc['metadata']['name']}: {exc}")
        validated += 1
    kinds = {d["kind"] for _, d in k8s_objects()}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "PodDisruptionBudget", "Service",
            "ScaledObject"} <= kinds
    assert validated >= 10


def test_k8s_validation_is_strict():
    """The validator really rejects a typo'd field (so a pass above means something)."""
    dep = json.loads(json.dumps(one("Deployment", "vigil-hasher")))
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def _k8s_definition_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one Kubernetes type from the schemas kubernetes-validate bundles."""
    from referencing import Registry, Resource

    root = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local-strict"
    defs = json.loads((root / "_definitions.json").read_text())
    registry = Resource.from_contents(defs) @ Registry()
    return jsonschema.Draft202012Validator({"$ref": f"{defs['$id']}#/$defs/{name}"}, registry=registry)


def _keda_schemas() -> dict[str, dict]:
    """The ScaledObject / TriggerAuthentication fields KEDA documents (keda.sh/v1alpha1, KEDA 2.x);
    unknown fields are errors. Kafka trigger metadata keys are the Apache Kafka scaler's."""
    str_map = {"type": "object", "additionalProperties": {"type": "string"}}
    meta = {"type": "object", "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": str_map, "annotations": str_map}, "additionalProperties": False}
    kafka_keys = ["bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv",
                  "topic", "topicFromEnv", "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
                  "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
                  "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "partitionLimitation",
                  "version", "sasl", "tls", "unsafeSsl"]
    trigger = {
        "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
        "properties": {
            "type": {"type": "string"}, "name": {"type": "string"},
            "metadata": str_map,
            "authenticationRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                  "properties": {"name": {"type": "string"},
                                                 "kind": {"enum": ["TriggerAuthentication",
                                                                   "ClusterTriggerAuthentication"]}}},
            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
            "useCachedMetrics": {"type": "boolean"},
        },
        "if": {"properties": {"type": {"const": "kafka"}}},
        "then": {"properties": {"metadata": {
            "type": "object", "required": ["bootstrapServers", "consumerGroup"],
            "propertyNames": {"enum": kafka_keys},
            "properties": {"lagThreshold": {"pattern": r"^[0-9]+$"},
                           "activationLagThreshold": {"pattern": r"^[0-9]+$"},
                           "offsetResetPolicy": {"enum": ["earliest", "latest"]}}}}},
    }
    nonneg = {"type": "integer", "minimum": 0}
    scaled_object = {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"}, "metadata": meta,
            "spec": {
                "type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                       "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                      "name": {"type": "string"},
                                                      "envSourceContainerName": {"type": "string"}}},
                    "pollingInterval": nonneg, "cooldownPeriod": nonneg, "initialCooldownPeriod": nonneg,
                    "idleReplicaCount": nonneg, "minReplicaCount": nonneg, "maxReplicaCount": nonneg,
                    "fallback": {"type": "object", "required": ["failureThreshold", "replicas"],
                                 "properties": {"failureThreshold": nonneg, "replicas": nonneg,
                                                "behavior": {"type": "string"}}, "additionalProperties": False},
                    "advanced": {"type": "object", "additionalProperties": False, "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False,
                                                          "properties": {"name": {"type": "string"},
                                                                         "behavior": {"type": "object"}}},
                        "scalingModifiers": {"type": "object"}}},
                    "triggers": {"type": "array", "minItems": 1, "items": trigger},
                },
            },
        },
    }
    trigger_auth = {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "TriggerAuthentication"}, "metadata": meta,
            "spec": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
                "secretTargetRef": {"type": "array", "items": {
                    "type": "object", "required": ["parameter", "name", "key"], "additionalProperties": False,
                    "properties": {"parameter": {"type": "string"}, "name": {"type": "string"},
                                   "key": {"type": "string"}}}},
                "configMapTargetRef": {"type": "array"}, "env": {"type": "array"},
                "podIdentity": {"type": "object"}}},
        },
    }
    return {"ScaledObject": scaled_object, "TriggerAuthentication": trigger_auth}


def test_keda_objects_match_documented_fields():
    schemas = _keda_schemas()
    behavior_validator = _k8s_definition_validator("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior")
    keda = [d for _, d in k8s_objects() if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in keda} == {"ScaledObject", "TriggerAuthentication"}
    for d in keda:
        try:
            jsonschema.validate(d, schemas[d["kind"]])
            behavior = d.get("spec", {}).get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
            if behavior is not None:  # KEDA passes this through to the HPA: the Kubernetes schema applies
                behavior_validator.validate(behavior)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{d['kind']} {d['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}")
    # and the schema bites: a misspelt field is rejected
    bad = json.loads(json.dumps(one("ScaledObject", "vigil-hasher")))
    bad["spec"]["maxReplicas"] = bad["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["ScaledObject"])


def test_keda_scales_hashers_on_upload_lag_consistently_with_the_code():
    from workers.uploads import hasher, upload_matcher

    config = one("ConfigMap", "vigil-config")["data"]
    secret = one("Secret", "vigil-secrets")["stringData"]
    topics = {t.name: t for t in topic_names.all_topics(int(config["VIGIL_PARTITIONS"]))}
    groups = {"vigil-hasher": (hasher.GROUP, topic_names.UPLOADS), "vigil-matcher": (upload_matcher.GROUP, topic_names.HASHES)}
    so = one("ScaledObject", "vigil-hasher")
    assert so["spec"]["triggers"][0]["metadata"]["consumerGroup"] == "vigil-hasher"
    assert so["spec"]["triggers"][0]["metadata"]["topic"] == "moderation.uploads"
    for d in k8s_find("ScaledObject"):
        target = d["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        one("Deployment", target["name"])
        group, topic = groups[target["name"]]
        for trig in d["spec"]["triggers"]:
            assert trig["type"] == "kafka"
            md = trig["metadata"]
            assert md["consumerGroup"] == group, f"{d['metadata']['name']}: the code's consumer group is {group}"
            assert md["topic"] == topic and md["topic"] in topics
            assert md["bootstrapServers"] == config["VIGIL_KAFKA"]
            auth = one("TriggerAuthentication", trig["authenticationRef"]["name"])
            for ref in auth["spec"]["secretTargetRef"]:
                one("Secret", ref["name"])
                assert ref["key"] in secret, f"TriggerAuthentication refers to missing secret key {ref['key']}"
        # More replicas than partitions would sit idle.
        assert d["spec"]["minReplicaCount"] >= 1
        assert d["spec"]["maxReplicaCount"] <= topics[topic].partitions
    # KEDA's credentials say the same as the workers' librdkafka config.
    params = {r["parameter"]: secret[r["key"]] for r in one("TriggerAuthentication", "vigil-kafka")["spec"]["secretTargetRef"]}
    kafka_config = json.loads(secret["VIGIL_KAFKA_CONFIG"])
    keda_to_librdkafka = {"plaintext": "PLAIN", "scram_sha256": "SCRAM-SHA-256", "scram_sha512": "SCRAM-SHA-512",
                          "oauthbearer": "OAUTHBEARER", "gssapi": "GSSAPI"}
    assert keda_to_librdkafka[params["sasl"]] == kafka_config["sasl.mechanism"]
    assert params["username"] == kafka_config["sasl.username"]
    assert params["tls"] in {"enable", "disable"}
    assert (params["tls"] == "enable") == kafka_config["security.protocol"].endswith("SSL")


def test_k8s_settings_are_real_settings():
    config = one("ConfigMap", "vigil-config")["data"]
    secret = one("Secret", "vigil-secrets")["stringData"]
    fields = {f"VIGIL_{f.upper()}" for f in Settings.__dataclass_fields__}
    assert set(config) <= fields, f"unknown settings in the ConfigMap: {set(config) - fields}"
    assert not {"VIGIL_REDIS", "VIGIL_KAFKA_CONFIG"} & set(config), "credentials belong in the Secret"
    vigil_secret = {k: v for k, v in secret.items() if k.startswith("VIGIL_")}
    assert set(vigil_secret) <= fields
    s = Settings.from_env({**config, **vigil_secret})
    assert s.metrics_host == "0.0.0.0"
    assert s.kafka_config["sasl.mechanism"] and s.redis.startswith(("redis://", "rediss://"))
    assert s.media_roots == ("/media",)


def test_k8s_workers():
    config = one("ConfigMap", "vigil-config")["data"]
    secret = one("Secret", "vigil-secrets")
    port = int(config["VIGIL_METRICS_PORT"])
    ns = one("Namespace", "vigil")["metadata"]["name"]
    # Requests from the benchmarks: hasher ~1 CPU / 1 GiB, matcher ~0.5 CPU / 2.5 GiB.
    expected = {"hasher": (1.0, 1 * 2**30), "matcher": (0.5, 2.5 * 2**30)}
    for kind, name in WORKER_JOBS.items():
        dep = one("Deployment", name)
        tmpl = dep["spec"]["template"]
        pod = tmpl["spec"]
        labels = tmpl["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items())
        (c,) = pod["containers"]
        assert c["command"] == ["vigil", "worker", kind]
        cpu, mem = expected[kind]
        assert quantity(c["resources"]["requests"]["cpu"]) == pytest.approx(cpu)
        assert quantity(c["resources"]["requests"]["memory"]) == pytest.approx(mem)
        assert quantity(c["resources"]["limits"]["memory"]) >= mem
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == port
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["port"] in ("metrics", port)
        ann = tmpl["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
        assert ann["prometheus.io/path"] == "/metrics"
        psc, csc = pod["securityContext"], c["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"]
        if csc.get("readOnlyRootFilesystem"):
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/tmp", config["VIGIL_DATA_DIR"]} <= mounts, "a read-only root needs writable /tmp and data dir"
        assert c.get("workingDir") in (None, config["VIGIL_DATA_DIR"])
        # Config and credentials come from the ConfigMap and Secret that exist.
        assert {r["configMapRef"]["name"] for r in c["envFrom"] if "configMapRef" in r} == {"vigil-config"}
        for e in c.get("env", []):
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
        # The PDB and the metrics Service select these pods.
        pdbs = [p for p in k8s_find("PodDisruptionBudget")
                if all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())]
        assert len(pdbs) == 1, f"{name}: expected one PodDisruptionBudget"
        svcs = [s for s in k8s_find("Service") if all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        assert svcs and all(p["targetPort"] in ports or p["targetPort"] == port for s in svcs for p in s["spec"]["ports"])
    # Hashers read media read-only; matchers do not mount it.
    hpod = one("Deployment", "vigil-hasher")["spec"]["template"]["spec"]
    media = next(m for m in hpod["containers"][0]["volumeMounts"] if m["mountPath"] == "/media")
    assert media["readOnly"] is True
    vol = next(v for v in hpod["volumes"] if v["name"] == media["name"])
    one("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"])
    mpod = one("Deployment", "vigil-matcher")["spec"]["template"]["spec"]
    assert all(m["mountPath"] != "/media" for m in mpod["containers"][0]["volumeMounts"])
    # Everything namespaced lives in the vigil namespace.
    for _, d in k8s_objects():
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == ns, f"{d['kind']} {d['metadata']['name']}"


def test_k8s_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(k["resources"]) == files


def test_every_vigil_command_in_the_artifacts_is_a_real_cli_command():
    from workers.cli import build_parser

    commands = set()
    for s in compose()["services"].values():
        if s.get("command") and s["command"][0] == "vigil":
            commands.add(tuple(s["command"]))
    for _, d in k8s_objects():
        for c in pod_spec(d).get("containers", []):
            if c.get("command") or not c["image"].startswith("postgres:"):  # PostgreSQL runs its image's own
                commands.add(tuple(c["command"]))
    commands.add(tuple([c for c in stages()[-1] if c.cmd.upper() == "CMD"][-1].value))
    assert {("vigil", "worker", "hasher"), ("vigil", "worker", "matcher"), ("vigil", "topics", "create"),
            ("vigil", "bank", "snapshot", "--all")} <= commands
    parser = build_parser()
    for cmd in commands:
        assert cmd[0] == "vigil"
        try:
            args = parser.parse_args(list(cmd[1:]))
        except SystemExit:
            pytest.fail(f"`{' '.join(cmd)}` is not a valid vigil command")
        assert callable(args.func)


def test_k8s_bank_snapshot_cronjob_writes_snapshots_as_the_bank_admin():
    """docs/operations.md tells operators to snapshot banks periodically: the CronJob does it, one at
    a time, with the bank-admin Redis user (workers' credentials cannot write banks)."""
    cron = one("CronJob", "vigil-bank-snapshot")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = pod_spec(cron)
    (c,) = pod["containers"]
    assert c["command"] == ["vigil", "bank", "snapshot", "--all"]
    secret = one("Secret", "vigil-secrets")["stringData"]
    (redis_env,) = [e for e in c["env"] if e["name"] == "VIGIL_REDIS"]
    key = redis_env["valueFrom"]["secretKeyRef"]["key"]
    assert key != "VIGIL_REDIS" and "vigil-bank-admin" in secret[key]
    acl = (REPO / "deploy" / "redis" / "acl.conf").read_text()
    assert "user vigil-bank-admin on" in acl
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"]
    assert "vigil bank snapshot --all" in (REPO / "docs" / "operations.md").read_text()


def test_compose_and_k8s_run_the_review_service_on_postgres():
    services = compose()["services"]
    review, pg = services["review"], services["postgres"]
    fields = {f"VIGIL_{f.upper()}" for f in Settings.__dataclass_fields__}
    assert review["command"] == ["vigil", "review"] and set(review["environment"]) <= fields
    s = Settings.from_env({k: str(v) for k, v in review["environment"].items()})
    assert s.review_db.startswith("postgresql+psycopg://") and "@postgres:5432/" in s.review_db
    assert pg["environment"]["POSTGRES_PASSWORD"] in s.review_db and s.review_host == "0.0.0.0"
    assert review["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any(v.endswith(":/media:ro") for v in review["volumes"])
    scrape = yaml.safe_load((PROM / "prometheus.yml").read_text())["scrape_configs"]
    assert any(j["job_name"] == "vigil-review" and j["static_configs"][0]["targets"] == [f"review:{s.review_port}"]
               for j in scrape)
    dep = one("Deployment", "vigil-review")["spec"]["template"]
    (c,) = dep["spec"]["containers"]
    assert c["command"] == ["vigil", "review"]
    secret = one("Secret", "vigil-secrets")["stringData"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"] if "valueFrom" in e}
    assert refs["VIGIL_REVIEW_DB"] in secret and secret["VIGIL_REVIEW_DB"].startswith("postgresql+psycopg://")
    assert int(dep["metadata"]["annotations"]["prometheus.io/port"]) == c["ports"][0]["containerPort"]
    assert one("StatefulSet", "vigil-postgres")
