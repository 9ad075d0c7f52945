#!/usr/bin/env python3
"""Renders the base, every overlay and the example worker of deploy/k8s with
`kubectl kustomize` and checks the objects and their cross-references:
- selectors match the pods' labels; Service ports and probes name ports the
  container has; every ConfigMap and Secret a pod mounts is rendered, is a
  cert-manager Certificate's, or is one the operator creates, with the keys
  the server's flags point at; security and shutdown settings hold;
- placement and rollout: a required pod anti-affinity on the node, a
  ScheduleAnyway zone spread, OrderedReady, minReadySeconds > 0, a rolling
  update and a PodDisruptionBudget of one pod at a time, and no replicas in
  any rendered manifest (so a re-apply keeps `kubectl scale`'s count);
- a startup probe allowing >= 600 s, asking what the liveness probe asks;
- each overlay's Namespace object, with every namespaced object in it;
- prod: no Secret with data, no dev token, no PEM private key; a
  Certificate for the mounted TLS Secret covering the headless Service's
  names; an image from a registry at a fixed tag or digest; a
  ServiceMonitor and a PrometheusRule whose expressions read only metrics
  service/metrics.cc and service/stats.cc export (plus named
  kube-state-metrics ones), one rule per documented alert (and, where
  promtool is installed, `promtool check rules` and the rules' unit tests,
  prometheus_rules_test.yaml);
- the example worker reaches prod: NetworkPolicy label, discovery name,
  tls_server_name among the certificate's names, token from a Secret;
- the rebalance Job (jobs/rebalance) and the nightly CronJob
  (components/nightly-rebalance, rendered into a copy of prod): neither in
  prod's default render; prod's namespace, image and NetworkPolicy label;
  the servers named as discovery names them, in names the certificate
  covers; the token file and only the CA mounted from prod's Secrets, no
  credential; the servers' security settings; and their shell script,
  run with stubs of `qaqkv` and `getent`, runs `qaqkv rebalance` with the
  expected flags, and stops on bad or stale pod counts; the CronJob's pod
  is the Job's; the documented `kubectl set env --local` sets the counts;
- .dockerignore leaves out build trees and .git but nothing the image's
  build reads, and the Dockerfile's base images are build arguments.

Usage: kustomize_test.py DEPLOY_K8S_DIR   (exit 0 pass, 1 fail, 77 skip)
The repository root is taken to be DEPLOY_K8S_DIR/../..
"""
import base64
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)


def render(path):
    out = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    if out.returncode != 0:
        FAILURES.append(f"{path}: kubectl kustomize failed: {out.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def flags_of(configmap):
    """The server flags in the ConfigMap's server.flags, as {name: value}."""
    text = configmap.get("data", {}).get("server.flags", "")
    flags = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line[2:].partition("=")
        flags[name] = value
    return flags


# The keys of a cert-manager Certificate's Secret (ca.crt when the issuer
# provides one).
CERT_MANAGER_KEYS = {"tls.crt", "tls.key", "ca.crt"}


def secret_keys(name, objects, external):
    """The keys Secret `name` will have: a rendered Secret's, a cert-manager
    Certificate's (whose secretName it is), or those the operator is told to
    create (`external`, {name: keys}, docs/runbooks.md); None if nothing
    provides it."""
    obj = objects.get(("Secret", name))
    if obj is not None:
        return set(obj.get("data", {})) | set(obj.get("stringData", {}))
    if any(k == "Certificate" and d["spec"].get("secretName") == name for (k, _), d in objects.items()):
        return CERT_MANAGER_KEYS
    return external.get(name)


def mounted_key(pod, container, path, objects, kind, external=None):
    """Whether `path` is a key of a `kind` object mounted in `container`."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        prefix = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        v = volumes.get(m["name"], {})
        key = path[len(prefix):]
        if kind == "ConfigMap" and "configMap" in v:
            obj = objects.get(("ConfigMap", v["configMap"]["name"]))
            return obj is not None and key in obj.get("data", {})
        if kind == "Secret" and "secret" in v:
            return key in (secret_keys(v["secret"]["secretName"], objects, external or {}) or set())
    return False


def selects(term, labels):
    """Whether a labelSelector (matchLabels only) selects pods with `labels`."""
    sel = (term or {}).get("labelSelector", {})
    return set(sel) <= {"matchLabels"} and matches(sel.get("matchLabels", {}), labels)


def check_rollout(name, spec, labels, docs):
    """Placement and rollout: one pod per node, spread over zones, one pod
    started, stopped or updated at a time, and a PDB that agrees."""
    pod = spec["template"]["spec"]
    # With R = 2 the two copies of a block are on two pods; only one pod per
    # node keeps them on two nodes, and only a required term guarantees it.
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    required = anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    check(any(t.get("topologyKey") == "kubernetes.io/hostname" and selects(t, labels) for t in required),
          f"{name}: no required pod anti-affinity on kubernetes.io/hostname selecting the server pods")
    spread = pod.get("topologySpreadConstraints", [])
    zone = [c for c in spread if c.get("topologyKey") == "topology.kubernetes.io/zone"]
    check(any(c.get("whenUnsatisfiable") == "ScheduleAnyway" and selects(c, labels)
              and c.get("maxSkew") == 1 for c in zone),
          f"{name}: no zone spread (topology.kubernetes.io/zone, maxSkew 1, ScheduleAnyway) of the server pods")
    for c in spread:
        check(selects(c, labels), f"{name}: a topology spread constraint selects no server pod")

    check(spec.get("podManagementPolicy") == "OrderedReady",
          f"{name}: podManagementPolicy {spec.get('podManagementPolicy')}: a scale-down may stop several pods at once")
    check(spec.get("minReadySeconds", 0) > 0, f"{name}: minReadySeconds is not > 0")
    strategy = spec.get("updateStrategy", {})
    check(strategy.get("type", "RollingUpdate") == "RollingUpdate", f"{name}: updateStrategy is not RollingUpdate")
    rolling = strategy.get("rollingUpdate", {})
    check(rolling.get("maxUnavailable", 1) == 1, f"{name}: rolling update maxUnavailable != 1")
    check(rolling.get("partition", 0) == 0, f"{name}: a committed partition holds pods back from updates")
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    check(len(pdbs) == 1, f"{name}: want one PodDisruptionBudget")
    for d in pdbs:
        check(d["spec"].get("maxUnavailable") == 1 and "minAvailable" not in d["spec"],
              f"{name}: PodDisruptionBudget is not maxUnavailable 1")


def strings(obj):
    """Every string in a rendered object, keys and values."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)


def tokens_of(docs):
    """The tokens of every rendered Secret's `tokens` key (dev's placeholders)."""
    out = set()
    for d in docs:
        if d["kind"] == "Secret":
            text = base64.b64decode(d.get("data", {}).get("tokens", "")).decode()
            text += d.get("stringData", {}).get("tokens", "")
            out |= {line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")}
    return out


def check_no_credentials(name, docs, placeholder_tokens):
    """Production ships no credential: no Secret with data (a generator's
    output), no placeholder token, no private key."""
    for d in docs:
        if d["kind"] == "Secret":
            check(not d.get("data") and not d.get("stringData"),
                  f"{name}: Secret {d['metadata']['name']} carries data from git")
    for text in (t for d in docs for t in strings(d)):
        for token in placeholder_tokens:
            check(token not in text, f"{name}: contains the dev placeholder token {token!r}")
        check(not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text), f"{name}: contains a PEM private key")


def certificate_names(docs):
    """Every DNS name the cert-manager Certificates cover."""
    return {n for d in docs if d["kind"] == "Certificate" for n in d["spec"].get("dnsNames", [])}


def check_certificate(name, docs, secret_name, namespace, service):
    """The TLS Secret is a cert-manager Certificate's, for the names clients use."""
    certs = [d for d in docs if d["kind"] == "Certificate" and d["spec"].get("secretName") == secret_name]
    check(len(certs) == 1, f"{name}: no cert-manager Certificate writes the mounted TLS Secret {secret_name}")
    for c in certs:
        check(c["apiVersion"] == "cert-manager.io/v1", f"{name}: Certificate apiVersion {c['apiVersion']}")
        issuer = c["spec"].get("issuerRef", {})
        check(issuer.get("kind") in ("ClusterIssuer", "Issuer") and issuer.get("name"),
              f"{name}: Certificate issuerRef {issuer}")
        want = {f"*.{service}.{namespace}.svc", f"*.{service}.{namespace}.svc.cluster.local",
                f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"}
        missing = want - set(c["spec"].get("dnsNames", []))
        check(not missing, f"{name}: Certificate lacks dnsNames {sorted(missing)}")


# Kinds that live outside namespaces (of those an overlay might render).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer",
                  "CustomResourceDefinition", "PriorityClass", "StorageClass", "PersistentVolume"}


def check_namespace(name, docs):
    """One Namespace object, so a first apply works, and every namespaced
    object in it; it enforces the restricted Pod Security Standard."""
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    check(len(namespaces) == 1, f"{name}: want one Namespace object, have {len(namespaces)}")
    if len(namespaces) != 1:
        return None
    ns = namespaces[0]["metadata"]["name"]
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            check(d["metadata"].get("namespace") == ns,
                  f"{name}: {d['kind']} {d['metadata']['name']} is in namespace "
                  f"{d['metadata'].get('namespace')!r}, not {ns!r}")
    labels = namespaces[0]["metadata"].get("labels", {})
    check(labels.get("pod-security.kubernetes.io/enforce") == "restricted",
          f"{name}: Namespace {ns} does not enforce the restricted Pod Security Standard")
    return ns


def check_registry_image(name, container):
    """Prod pulls from a named registry by tag or digest: a bare `qaqkv`
    would resolve to docker.io/library/qaqkv, which is not ours."""
    image = container.get("image", "")
    first = image.split("/", 1)[0]
    check("/" in image and ("." in first or ":" in first or first == "localhost"),
          f"{name}: image {image!r} names no registry")
    ref = image.rsplit("/", 1)[-1]
    check("@sha256:" in ref or (":" in ref and not ref.endswith(":latest")),
          f"{name}: image {image!r} has neither a fixed tag nor a digest")


def ignore_regex(pattern):
    """A .dockerignore pattern as a regex over root-relative paths (Go's
    filepath.Match, with ** across folders), matching the path or a parent."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):  # any folders, or none
            out += "(.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "(/.*)?$")


def docker_ignored(rules, path):
    """Whether .dockerignore `rules` leave `path` out (the last match wins)."""
    ignored = False
    for negate, regex in rules:
        if regex.match(path):
            ignored = not negate
    return ignored


def check_docker_context(repo):
    """.dockerignore leaves out build trees and .git but nothing the image's
    build reads; the Dockerfile's base images can be pinned by digest."""
    dockerfile = open(f"{repo}/deploy/Dockerfile").read()
    try:
        lines = open(f"{repo}/.dockerignore").read().splitlines()
    except FileNotFoundError:
        check(False, "no .dockerignore at the repository root")
        return
    rules = []
    for line in (l.strip() for l in lines):
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, ignore_regex(line.lstrip("!").strip("/"))))
    for path in ["build", "build/release", ".git"]:
        check(docker_ignored(rules, path), f".dockerignore does not leave out {path}")
    # What the build reads: the Dockerfile's COPY sources, the top-level
    # CMake files, and every folder CMakeLists.txt adds outside the options
    # the Dockerfile turns off.
    needed = {"CMakeLists.txt", "CMakePresets.json", "cmake"}
    for m in re.finditer(r"^COPY\s+(?!--from)(.+)$", dockerfile, re.M):
        needed |= {src for src in m.group(1).split()[:-1] if src != "."}
    off = set(re.findall(r"-D(QAQKV_BUILD_\w+)=OFF", dockerfile)) | {"QAQKV_BUILD_FUZZERS"}
    conditions = []
    for line in open(f"{repo}/CMakeLists.txt").read().splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.match(r"if\s*\((.*)\)$", line):
            conditions.append(m.group(1).strip())
        elif re.match(r"endif\s*\(", line):
            conditions.pop()
        elif m := re.match(r"add_subdirectory\s*\(\s*([\w/.-]+)", line):
            if not any(c in off for c in conditions):
                needed.add(m.group(1))
    for path in sorted(needed):
        check(os.path.exists(f"{repo}/{path}"), f"the image's build needs {path}, which does not exist")
        check(not docker_ignored(rules, path), f".dockerignore leaves out {path}, which the image's build needs")
    for m in re.finditer(r"^FROM\s+(\S+)", dockerfile, re.M):
        image = m.group(1)
        check(image.startswith("${") or "@sha256:" in image,
              f"Dockerfile: FROM {image} is neither a build argument (to pin by digest) nor pinned")


# Metrics the rules may read besides the server's own: kube-state-metrics,
# for pods not ready or not running, which the server cannot report itself.
KUBE_STATE_METRICS = {"kube_statefulset_status_replicas_ready", "kube_statefulset_replicas"}
# The alerts docs/operations.md recommends, by the metric each one reads;
# every one must have a rule.
DOCUMENTED_ALERT_METRICS = ["qaqkv_checksum_failures_total", "qaqkv_background_errors_total",
                            "qaqkv_requests_total", "qaqkv_tier_hits_total", "qaqkv_tier_misses_total",
                            "qaqkv_evictions_total", "qaqkv_tier_budget_bytes",
                            "kube_statefulset_status_replicas_ready"]
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def exported_metrics(repo):
    """The metric names the server exports (every "qaqkv_..." string literal
    of the two files that render /metrics) and the rebalance command's
    gauges (qaqkv_rebalance_ and each name of its kReportCounts table)."""
    names = set()
    for path in ["service/metrics.cc", "service/stats.cc"]:
        names |= set(re.findall(r'"(qaqkv_[a-z0-9_]+)"', open(f"{repo}/{path}").read()))
    rebalance = open(f"{repo}/tools/rebalance_command.cc").read()
    names |= {"qaqkv_rebalance_" + f for f in re.findall(r'\{"([a-z_]+)", &Report::', rebalance)}
    names |= {"qaqkv_rebalance_done"} if "qaqkv_rebalance_done" in rebalance else set()
    # A histogram's family name is no series of its own; its _bucket, _sum
    # and _count are.
    return {n for n in names if n + "_bucket" not in names}


def metric_names(expr):
    """The metric names a PromQL expression reads: identifiers left once
    strings, label matchers, ranges, grouping clauses and offsets are cut,
    that are not functions (followed by a parenthesis) or keywords."""
    expr = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        if m.group(2) is None and m.group(1).lower() not in PROMQL_KEYWORDS:
            names.add(m.group(1))
    return names


def markdown_anchors(path):
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        return set()
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def check_monitoring(name, docs, services, repo):
    """A ServiceMonitor that reaches the metrics port, and rules that read
    only metrics that exist, one for each documented alert."""
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    check(len(monitors) == 1, f"{name}: want one ServiceMonitor, have {len(monitors)}")
    for m in monitors:
        check(m["apiVersion"] == "monitoring.coreos.com/v1", f"{name}: ServiceMonitor apiVersion {m['apiVersion']}")
        targets = [s for s in services if matches(m["spec"].get("selector", {}).get("matchLabels", {}),
                                                  s["metadata"].get("labels", {}))]
        check(len(targets) == 1, f"{name}: ServiceMonitor selects {len(targets)} Services, want 1")
        for endpoint in m["spec"].get("endpoints", []):
            ports = {p.get("name") for t in targets for p in t["spec"]["ports"]}
            check(endpoint.get("port") in ports, f"{name}: ServiceMonitor scrapes port {endpoint.get('port')} "
                  f"the Service lacks")
            check(any(p.get("targetPort") == "metrics" and p.get("name") == endpoint.get("port")
                      for t in targets for p in t["spec"]["ports"]),
                  f"{name}: ServiceMonitor's port does not lead to the pods' metrics port")

    rules = [r for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"].get("groups", [])
             for r in g.get("rules", [])]
    check(any(r.get("alert") for r in rules), f"{name}: no PrometheusRule alerts")
    exported = exported_metrics(repo)
    check(len(exported) >= 10 and "qaqkv_requests_total" in exported,
          f"found only {sorted(exported)} in service/metrics.cc and service/stats.cc")
    recorded = {r["record"] for r in rules if "record" in r}
    known = exported | recorded | KUBE_STATE_METRICS
    read = set()
    for r in rules:
        what = r.get("alert") or r.get("record")
        used = metric_names(r.get("expr", ""))
        read |= used
        check(bool(used), f"{name}: rule {what} reads no metric")
        for metric in sorted(used - known):
            check(False, f"{name}: rule {what} reads {metric}, which the server does not export")
        if "alert" in r:
            annotations = r.get("annotations") or {}
            check((r.get("labels") or {}).get("severity") in ("critical", "warning", "info"),
                  f"{name}: alert {what} has no severity")
            check(bool(annotations.get("summary")), f"{name}: alert {what} has no summary")
            if "runbook" in annotations:
                path, _, anchor = annotations["runbook"].partition("#")
                check(anchor in markdown_anchors(f"{repo}/{path}"),
                      f"{name}: alert {what} links {annotations['runbook']}, which has no such heading")
    for r in rules:
        if "record" in r:
            read |= metric_names(r["expr"])
    for metric in DOCUMENTED_ALERT_METRICS:
        check(metric in read, f"{name}: no rule reads {metric} (an alert docs/operations.md recommends)")
    # Where promtool is installed (Debian's prometheus package), also parse
    # every expression as Prometheus would, and run the rules' unit tests
    # (prometheus_rules_test.yaml).
    if rules and shutil.which("promtool"):
        with tempfile.TemporaryDirectory() as tmp:
            groups = [g for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"]]
            with open(f"{tmp}/rules.yaml", "w") as f:
                yaml.safe_dump({"groups": groups}, f)
            shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "prometheus_rules_test.yaml"), tmp)
            for args in (["check", "rules", "rules.yaml"], ["test", "rules", "prometheus_rules_test.yaml"]):
                out = subprocess.run(["promtool", *args], cwd=tmp, capture_output=True, text=True)
                check(out.returncode == 0, f"{name}: promtool {' '.join(args)}: {out.stdout.strip()} {out.stderr.strip()}")
    elif rules:
        print(f"{name}: promtool not found: rule syntax and rule unit tests not run")


def server_ports_of(sts):
    """The server container's ports, {name: number}."""
    return {p["name"]: p["containerPort"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}


def check_admitted(name, labels, prod):
    """Prod's NetworkPolicy admits pods with `labels` (from any namespace) to gRPC."""
    sts = [d for d in prod if d["kind"] == "StatefulSet"]
    grpc_port = server_ports_of(sts[0]).get("grpc") if sts else None
    for policy in (d for d in prod if d["kind"] == "NetworkPolicy"):
        grpc_rules = [r for r in policy["spec"].get("ingress", [])
                      if any(p.get("port") in (grpc_port, "grpc") for p in r.get("ports", []))]
        check(any(matches(f.get("podSelector", {}).get("matchLabels", {}), labels)
                  and "namespaceSelector" in f for r in grpc_rules for f in r.get("from", [])),
              f"{name}: prod's NetworkPolicy does not admit the pods to gRPC")


def check_worker(name, docs, prod):
    """The example worker reaches prod's servers: admitted by their
    NetworkPolicy, discovering their headless Service, a token from a
    Secret, TLS with a CA file and a tls_server_name the certificate names."""
    check_namespace(name, docs)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    check(len(deployments) == 1, f"{name}: want one Deployment")
    sts = [d for d in prod if d["kind"] == "StatefulSet"]
    if len(deployments) != 1 or len(sts) != 1:
        return
    pod = deployments[0]["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    check(matches(deployments[0]["spec"]["selector"]["matchLabels"], labels), f"{name}: Deployment selects no pod")
    container = pod["spec"]["containers"][0]
    grpc_port = server_ports_of(sts[0]).get("grpc")
    check_admitted(name, labels, prod)
    env = {e["name"]: e for e in container.get("env", [])}
    script = " ".join(container.get("command", []) + container.get("args", []))
    for var in ["QAQKV_DISCOVERY", "QAQKV_TLS_SERVER_NAME", "QAQKV_TLS_CA"]:
        check(var in env and f"${var}" in script, f"{name}: {var} not set or not used")
    namespace = sts[0]["metadata"].get("namespace")
    service = sts[0]["spec"]["serviceName"]
    check(env.get("QAQKV_DISCOVERY", {}).get("value") == f"{service}.{namespace}.svc.cluster.local:{grpc_port}",
          f"{name}: discovery {env.get('QAQKV_DISCOVERY', {}).get('value')} is not prod's headless Service")
    certs = [d for d in prod if d["kind"] == "Certificate"]
    names = {n for c in certs for n in c["spec"].get("dnsNames", []) if not n.startswith("*")}
    check(env.get("QAQKV_TLS_SERVER_NAME", {}).get("value") in names,
          f"{name}: tls_server_name {env.get('QAQKV_TLS_SERVER_NAME', {}).get('value')} is not a name "
          f"prod's certificate carries ({sorted(names)})")
    token = env.get("QAQKV_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    check(bool(token.get("name") and token.get("key")), f"{name}: QAQKV_TOKEN does not come from a Secret")
    ca = env.get("QAQKV_TLS_CA", {}).get("value", "")
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    mounted = False
    for m in container.get("volumeMounts", []):
        prefix = m["mountPath"].rstrip("/") + "/"
        secret = volumes.get(m["name"], {}).get("secret")
        if ca.startswith(prefix) and secret:
            items = {i["path"]: i["key"] for i in secret.get("items", [])}
            mounted = items.get(ca[len(prefix):], ca[len(prefix):]) == "ca.crt" if items else True
    check(mounted, f"{name}: the CA file {ca!r} is not a mounted Secret's ca.crt")
    sc = container.get("securityContext", {})
    check(pod["spec"].get("securityContext", {}).get("runAsNonRoot") is True
          and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"],
          f"{name}: worker pod does not meet the restricted Pod Security Standard")


# Env of the rebalance pods that the operator sets per run, or the CronJob
# takes from the operator's ConfigMap: the rest of the pod is the same in
# the Job and the CronJob.
REBALANCE_COUNTS = {"QAQKV_PODS", "QAQKV_DRAINING_PODS"}


def run_rebalance_script(container, counts, resolvable=()):
    """Runs a rebalance container's shell script as the pod would, with the
    container's env (`counts` in place of QAQKV_PODS and
    QAQKV_DRAINING_PODS) and stubs on PATH: `qaqkv` records its arguments,
    `getent hosts NAME` succeeds for the names in `resolvable`. Returns
    (exit code, the arguments qaqkv got or None, stderr)."""
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    env.update(counts)
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/qaqkv", "w") as f:
            f.write('#!/bin/sh\nprintf \'%s\\n\' "$@" > "$STUB_ARGS"\n')
        with open(f"{tmp}/getent", "w") as f:
            f.write('#!/bin/sh\n[ "$1" = hosts ] && grep -qxF -- "$2" "$STUB_HOSTS"\n')
        with open(f"{tmp}/hosts", "w") as f:
            f.write("".join(f"{h}\n" for h in resolvable))
        for stub in ("qaqkv", "getent"):
            os.chmod(f"{tmp}/{stub}", 0o755)
        env.update(PATH=f"{tmp}:/usr/bin:/bin", STUB_ARGS=f"{tmp}/args", STUB_HOSTS=f"{tmp}/hosts")
        out = subprocess.run(container["command"] + container.get("args", []), env=env,
                             capture_output=True, text=True)
        args = open(f"{tmp}/args").read().splitlines() if os.path.exists(f"{tmp}/args") else None
    return out.returncode, args, out.stderr


def flag_values(args):
    """`--flag value` pairs of a command line as {flag: value} (a flag
    without a value: "")."""
    flags = {}
    i = 0
    while i < len(args):
        if args[i].startswith("--"):
            has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
            flags[args[i]] = args[i + 1] if has_value else ""
            i += 2 if has_value else 1
        else:
            i += 1
    return flags


def check_rebalance_pod(name, spec, prod, operator_secrets):
    """A rebalance Job's spec (a Job's, or a CronJob's jobTemplate's) against
    prod: it reaches the servers by the names workers on discovery use,
    with the token file and the CA of prod's Secrets and no credential of
    its own, runs like the servers' pods, and its script runs `qaqkv
    rebalance` with the flags the counts ask for."""
    sts = [d for d in prod if d["kind"] == "StatefulSet"]
    if len(sts) != 1:
        check(False, f"{name}: prod has no StatefulSet to check against")
        return
    sts = sts[0]
    namespace = sts["metadata"].get("namespace")
    service = sts["spec"]["serviceName"]
    grpc_port = server_ports_of(sts).get("grpc")
    server_pod = sts["spec"]["template"]["spec"]
    server = server_pod["containers"][0]

    check(0 < spec.get("backoffLimit", 6) <= 10, f"{name}: backoffLimit {spec.get('backoffLimit')}")
    check("ttlSecondsAfterFinished" in spec, f"{name}: no ttlSecondsAfterFinished")
    rules = spec.get("podFailurePolicy", {}).get("rules", [])
    check(any(r.get("action") == "FailJob" and 2 in r.get("onExitCodes", {}).get("values", [])
              and r["onExitCodes"].get("operator") == "In" for r in rules),
          f"{name}: exit 2 (bad input) is retried: no podFailurePolicy FailJob on it")
    template = spec["template"]
    pod = template["spec"]
    check(pod.get("restartPolicy") == "Never", f"{name}: restartPolicy {pod.get('restartPolicy')}, want Never")
    check_admitted(name, template["metadata"].get("labels", {}), prod)
    check(len(pod["containers"]) == 1, f"{name}: want one container")
    container = pod["containers"][0]
    check(container.get("image") == server.get("image"),
          f"{name}: image {container.get('image')!r} is not the servers' {server.get('image')!r}")

    # Names: a worker on discovery names a server by its pod's reverse-DNS
    # name, and placement hashes names, so the Job must use the same ones;
    # the certificate must cover them (TLS checks the dialled name).
    env = {e["name"]: e for e in container.get("env", [])}
    pattern = env.get("QAQKV_SERVER_PATTERN", {}).get("value", "")
    want = f"{sts['metadata']['name']}-%d.{service}.{namespace}.svc.cluster.local:{grpc_port}"
    check(pattern == want, f"{name}: QAQKV_SERVER_PATTERN {pattern!r}, want {want!r}")
    names = {n for c in prod if c["kind"] == "Certificate" for n in c["spec"].get("dnsNames", [])}
    check(f"*.{service}.{namespace}.svc.cluster.local" in names,
          f"{name}: prod's certificate does not cover the pods' names")
    check("QAQKV_TOKEN" not in env and not any("secretKeyRef" in e.get("valueFrom", {}) for e in env.values()),
          f"{name}: a token in the environment (the token file gives one per tenant)")

    # Credentials: only the token file and the CA, both from prod's Secrets.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        if v.get("secret", {}).get("secretName") == "qaqkv-tls":
            check([i.get("key") for i in v["secret"].get("items", [])] == ["ca.crt"],
                  f"{name}: mounts more of qaqkv-tls than its ca.crt (the servers' private key)")
        check(v.get("secret", {}).get("secretName") in (None, "qaqkv-tokens", "qaqkv-tls"),
              f"{name}: mounts Secret {v.get('secret', {}).get('secretName')}, which prod does not have")

    # The script, as the pod runs it.
    check(container.get("command", [])[:2] == ["/bin/sh", "-c"], f"{name}: command is not a /bin/sh -c script")
    server_names = lambda ordinals: ",".join(pattern % i for i in ordinals)
    rc, args, err = run_rebalance_script(container, {"QAQKV_PODS": "3", "QAQKV_DRAINING_PODS": "0"})
    check(rc == 0 and args is not None and args[:1] == ["rebalance"],
          f"{name}: the script did not run `qaqkv rebalance` (exit {rc}: {err.strip()})")
    flags = flag_values(args or [])
    check(flags.get("--servers") == server_names(range(3)),
          f"{name}: --servers {flags.get('--servers')!r} for 3 pods, want {server_names(range(3))!r}")
    check("--draining" not in flags, f"{name}: --draining {flags.get('--draining')!r} without draining pods")
    check(flags.get("--replicas") == "2", f"{name}: --replicas {flags.get('--replicas')!r}, want the workers' 2")
    check("--keep-misplaced" not in flags, f"{name}: --keep-misplaced: stray copies would stay")
    check("--token" not in flags, f"{name}: a --token on the command line")
    size = flags.get("--max-bytes-per-second", "")
    check(re.fullmatch(r"[1-9][0-9]*([KMGT]i?B?)?", size, re.I) is not None,
          f"{name}: --max-bytes-per-second {size!r}: want a rate limit")
    objects = {(d["kind"], d["metadata"]["name"]): d for d in prod}
    check(mounted_key(pod, container, flags.get("--token-file", ""), objects, "Secret", operator_secrets)
          and any(v.get("secret", {}).get("secretName") == "qaqkv-tokens" for v in volumes.values()),
          f"{name}: --token-file {flags.get('--token-file')!r} is not the mounted qaqkv-tokens Secret's key")
    check(mounted_key(pod, container, flags.get("--tls-ca", ""), objects, "Secret", operator_secrets)
          and flags.get("--tls-ca", "").endswith("/ca.crt"),
          f"{name}: --tls-ca {flags.get('--tls-ca')!r} is not a mounted Secret's ca.crt")
    # Progress as metrics, on the port prod's PodMonitor scrapes.
    metrics_port = flags.get("--metrics-listen", ":").rsplit(":", 1)[1]
    named = {p.get("name"): str(p.get("containerPort")) for p in container.get("ports", [])}
    check(metrics_port != "" and named.get("metrics") == metrics_port,
          f"{name}: --metrics-listen {flags.get('--metrics-listen')!r} is not its `metrics` port {named}")
    monitors = [d for d in prod if d["kind"] == "PodMonitor"]
    labels = spec["template"]["metadata"].get("labels", {})
    check(any(matches(m["spec"]["selector"].get("matchLabels", {}), labels) and
              any(e.get("port") == "metrics" for e in m["spec"].get("podMetricsEndpoints", []))
              for m in monitors),
          f"{name}: no PodMonitor of prod scrapes its progress")

    rc, args, err = run_rebalance_script(container, {"QAQKV_PODS": "3", "QAQKV_DRAINING_PODS": "1"})
    flags = flag_values(args or [])
    check(rc == 0 and flags.get("--servers") == server_names(range(3))
          and flags.get("--draining") == server_names([3]),
          f"{name}: 3 pods and 1 draining give --servers {flags.get('--servers')!r} --draining "
          f"{flags.get('--draining')!r} (exit {rc}: {err.strip()})")
    # A pod past the counted ones (a scale-up since the counts were set):
    # the run stops before qaqkv starts.
    rc, args, err = run_rebalance_script(container, {"QAQKV_PODS": "3", "QAQKV_DRAINING_PODS": "0"},
                                         resolvable=[(pattern % 3).rsplit(":", 1)[0]])
    check(rc == 2 and args is None, f"{name}: runs although pod 3 resolves and the count is 3 (exit {rc})")
    for bad in ("", "x", "-1"):
        rc, args, err = run_rebalance_script(container, {"QAQKV_PODS": bad, "QAQKV_DRAINING_PODS": "0"})
        check(rc == 2 and args is None, f"{name}: runs with QAQKV_PODS={bad!r} (exit {rc})")

    # As the servers' pods: non-root as the same user, restricted.
    psc, ssc = pod.get("securityContext", {}), server_pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == ssc.get("runAsUser")
          and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"{name}: pod securityContext {psc} is not the servers' (non-root {ssc.get('runAsUser')}, RuntimeDefault)")
    sc = container.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
          and sc.get("capabilities", {}).get("drop") == ["ALL"],
          f"{name}: container securityContext {sc} is not the servers'")
    res = container.get("resources", {})
    check(bool(res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory")
               and res.get("limits", {}).get("memory")),
          f"{name}: resources {res}: want cpu and memory requests and a memory limit")


def without_counts(spec):
    """A rebalance Job spec with the env that differs per run left out."""
    spec = copy.deepcopy(spec)
    for c in spec["template"]["spec"]["containers"]:
        c["env"] = [e for e in c.get("env", []) if e["name"] not in REBALANCE_COUNTS]
    return spec


def check_rebalance(root, prod, operator_secrets, placeholder_tokens):
    """The one-off Job and the nightly CronJob: out of prod's default
    render, in prod's namespace, each pod checked by check_rebalance_pod,
    the CronJob's pod the Job's but for the counts."""
    check(not [d for d in prod if d["kind"] in ("Job", "CronJob")],
          "prod: renders a Job or CronJob; a rebalance must run only when asked")
    sts = [d for d in prod if d["kind"] == "StatefulSet"]
    namespace = sts[0]["metadata"].get("namespace") if sts else None

    name = "jobs/rebalance"
    docs = render(f"{root}/jobs/rebalance")
    check(sorted(d["kind"] for d in docs) == ["Job"],
          f"{name}: renders {sorted(d['kind'] for d in docs)}, want a Job only (created into prod's namespace)")
    jobs = [d for d in docs if d["kind"] == "Job"]
    if jobs:
        job = jobs[0]
        check(job["metadata"].get("namespace") == namespace,
              f"{name}: namespace {job['metadata'].get('namespace')!r}, not prod's {namespace!r}")
        check_no_credentials(name, docs, placeholder_tokens)
        check_registry_image(name, job["spec"]["template"]["spec"]["containers"][0])
        check_rebalance_pod(name, job["spec"], prod, operator_secrets)
        # The counts as docs/runbooks.md sets them.
        out = subprocess.run(["kubectl", "set", "env", "--local", "-f", "-", "-o", "yaml",
                              "QAQKV_PODS=4", "QAQKV_DRAINING_PODS=1"],
                             input=yaml.safe_dump(job), capture_output=True, text=True)
        set_env = {}
        if out.returncode == 0:
            for e in yaml.safe_load(out.stdout)["spec"]["template"]["spec"]["containers"][0]["env"]:
                set_env[e["name"]] = e.get("value")
        check(set_env.get("QAQKV_PODS") == "4" and set_env.get("QAQKV_DRAINING_PODS") == "1",
              f"{name}: `kubectl set env --local` does not set the counts: {out.stderr.strip()} {set_env}")

    # The CronJob, in a copy of the tree whose prod overlay includes it, as
    # an operator would add it.
    name = "prod + components/nightly-rebalance"
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(root, f"{tmp}/k8s")
        path = f"{tmp}/k8s/overlays/prod/kustomization.yaml"
        kustomization = yaml.safe_load(open(path))
        kustomization.setdefault("components", []).append("../../components/nightly-rebalance")
        with open(path, "w") as f:
            yaml.safe_dump(kustomization, f)
        docs = render(f"{tmp}/k8s/overlays/prod")
    check_namespace(name, docs)
    check_no_credentials(name, docs, placeholder_tokens)
    crons = [d for d in docs if d["kind"] == "CronJob"]
    check(len(crons) == 1, f"{name}: want one CronJob, have {len(crons)}")
    if not crons:
        return
    cron = crons[0]["spec"]
    check(cron.get("concurrencyPolicy") == "Forbid", f"{name}: concurrencyPolicy is not Forbid")
    spec = cron["jobTemplate"]["spec"]
    check_rebalance_pod(name, spec, prod, operator_secrets)
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0].get("env", [])}
    ref = env.get("QAQKV_PODS", {}).get("valueFrom", {}).get("configMapKeyRef", {})
    check(ref.get("name") == "qaqkv-rebalance" and ref.get("key") == "pods" and not ref.get("optional"),
          f"{name}: QAQKV_PODS does not come from the operator's ConfigMap qaqkv-rebalance, key pods")
    check(("ConfigMap", "qaqkv-rebalance") not in {(d["kind"], d["metadata"]["name"]) for d in docs},
          f"{name}: renders ConfigMap qaqkv-rebalance: a re-apply would reset the operator's count")
    check(env.get("QAQKV_DRAINING_PODS", {}).get("value") == "0", f"{name}: a nightly run drains pods")
    if jobs:
        check(without_counts(spec) == without_counts(jobs[0]["spec"]),
              f"{name}: the CronJob's Job differs from jobs/rebalance's beyond the pod counts")



def check_overlay(name, docs, want_flags, external_secrets, production=False, placeholder_tokens=(),
                  overlay=True, repo=None):
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    if overlay:
        check_namespace(name, docs)
    kinds = sorted({d["kind"] for d in docs})
    for k in ["ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"]:
        check(k in kinds, f"{name}: no {k}")
    sts = [d for d in docs if d["kind"] == "StatefulSet"]
    check(len(sts) == 1, f"{name}: want one StatefulSet")
    if not sts:
        return
    sts = sts[0]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check(matches(spec["selector"]["matchLabels"], labels), f"{name}: StatefulSet selector misses its pods")
    # No rendered manifest sets replicas: `kubectl scale` sets the count and
    # a re-apply must not undo it (docs/runbooks.md, "Deploy").
    check("replicas" not in spec, f"{name}: StatefulSet sets replicas {spec.get('replicas')}; "
          "a re-apply would undo `kubectl scale`")
    check_rollout(name, spec, labels, docs)
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    check("grpc" in ports and "metrics" in ports, f"{name}: container ports {ports}")

    # Services: the headless one is the StatefulSet's serviceName.
    services = [d for d in docs if d["kind"] == "Service"]
    headless = objects.get(("Service", spec.get("serviceName")))
    check(headless is not None and headless["spec"].get("clusterIP") == "None",
          f"{name}: serviceName {spec.get('serviceName')} is not a headless Service")
    for svc in services:
        check(matches(svc["spec"].get("selector", {}), labels), f"{name}: Service {svc['metadata']['name']} selects no pod")
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            check(target in ports or target in ports.values(),
                  f"{name}: Service {svc['metadata']['name']} targets port {target} the pod lacks")

    # Probes reach a port the container listens on.
    for probe_name in ["startupProbe", "readinessProbe", "livenessProbe"]:
        probe = container.get(probe_name)
        check(probe is not None, f"{name}: no {probe_name}")
        if not probe:
            continue
        port = (probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
        check(port in ports or port in ports.values(), f"{name}: {probe_name} probes port {port} the pod lacks")

    # The server listens only once its store is open (about 4.4 s per
    # million blocks): the startup probe must allow at least 10 minutes, and
    # ask what liveness asks (in prod the gRPC probe cannot speak TLS, so a
    # gRPC startup probe there would never pass).
    startup = container.get("startupProbe") or {}
    allowed = startup.get("initialDelaySeconds", 0) + \
        startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    check(allowed >= 600, f"{name}: startupProbe allows {allowed}s for the store's open, want >= 600s")
    handler = lambda p: {k: v for k, v in (p or {}).items() if k in ("grpc", "httpGet", "tcpSocket", "exec")}
    check(handler(startup) == handler(container.get("livenessProbe")),
          f"{name}: startupProbe and livenessProbe ask different things")
    # Readiness asks whether the server takes writes (the KvCache health
    # name, /readyz); liveness only whether it runs ("", /healthz), so a
    # full disk takes the pod out of the Service instead of restarting it.
    ready = container.get("readinessProbe") or {}
    live = container.get("livenessProbe") or {}
    check(ready.get("grpc", {}).get("service") == "qaqkv.v1.KvCache" or
          ready.get("httpGet", {}).get("path") == "/readyz",
          f"{name}: readinessProbe does not ask for readiness (qaqkv.v1.KvCache or /readyz)")
    check(live.get("grpc", {}).get("service", "") == "" if "grpc" in live else
          live.get("httpGet", {}).get("path") == "/healthz",
          f"{name}: livenessProbe asks for more than liveness (\"\" or /healthz)")

    # Other selectors.
    for d in docs:
        if d["kind"] == "PodDisruptionBudget":
            check(matches(d["spec"]["selector"]["matchLabels"], labels), f"{name}: PDB selects no pod")
        if d["kind"] == "NetworkPolicy":
            check(matches(d["spec"]["podSelector"]["matchLabels"], labels), f"{name}: NetworkPolicy selects no pod")
            open_ports = {p["port"] for rule in d["spec"].get("ingress", []) for p in rule.get("ports", [])}
            check(ports.get("grpc") in open_ports, f"{name}: NetworkPolicy closes the gRPC port")

    # Every mounted ConfigMap/Secret exists.
    for v in pod.get("volumes", []):
        if "configMap" in v:
            check(("ConfigMap", v["configMap"]["name"]) in objects, f"{name}: volume {v['name']} mounts a missing ConfigMap")
        if "secret" in v:
            check(secret_keys(v["secret"]["secretName"], objects, external_secrets) is not None,
                  f"{name}: volume {v['name']} mounts Secret {v['secret']['secretName']}, which nothing provides")

    # The server reads its flags from the mounted ConfigMap, and the files the
    # flags name are mounted keys.
    config_args = [a for a in container.get("args", []) if a.startswith("--config=")]
    check(len(config_args) == 1, f"{name}: no --config argument")
    if config_args:
        path = config_args[0].split("=", 1)[1]
        check(mounted_key(pod, container, path, objects, "ConfigMap"), f"{name}: --config {path} is not a mounted ConfigMap key")
        cm_volume = [v for v in pod["volumes"] if "configMap" in v]
        flags = flags_of(objects.get(("ConfigMap", cm_volume[0]["configMap"]["name"]), {})) if cm_volume else {}
        for flag, value in want_flags.items():
            check(flags.get(flag) == value, f"{name}: flag --{flag} is {flags.get(flag)!r}, want {value!r}")
        for flag in ["auth-tokens", "tls-cert", "tls-key"]:
            if flag in flags:
                check(mounted_key(pod, container, flags[flag], objects, "Secret", external_secrets),
                      f"{name}: --{flag} {flags[flag]} is not a mounted Secret key")
        if production:
            check("tls-cert" in flags and "auth-tokens" in flags, f"{name}: serves without TLS or tokens")
            tls_mount = [m for m in container["volumeMounts"]
                         if flags.get("tls-cert", "").startswith(m["mountPath"].rstrip("/") + "/")]
            tls_volume = [v for v in pod["volumes"] if tls_mount and v["name"] == tls_mount[0]["name"]]
            if tls_volume and "secret" in tls_volume[0]:
                check_certificate(name, docs, tls_volume[0]["secret"]["secretName"],
                                  sts["metadata"].get("namespace"), spec.get("serviceName"))
            else:
                check(False, f"{name}: --tls-cert is not on a mounted Secret")
            # /metrics names tenants: HTTPS, probed and scraped as such.
            check("metrics-tls" in flags, f"{name}: /metrics is served in plaintext (no --metrics-tls)")
            for probe_name in ["startupProbe", "readinessProbe", "livenessProbe"]:
                get = (container.get(probe_name) or {}).get("httpGet")
                check(get is None or get.get("scheme") == "HTTPS",
                      f"{name}: {probe_name} speaks HTTP to the HTTPS metrics port")
            for m in [d for d in docs if d["kind"] == "ServiceMonitor"]:
                for endpoint in m["spec"].get("endpoints", []):
                    tls = endpoint.get("tlsConfig", {})
                    check(endpoint.get("scheme") == "https" and
                          tls.get("ca", {}).get("secret", {}).get("name") == tls_volume[0]["secret"]["secretName"]
                          if tls_volume and "secret" in tls_volume[0] else False,
                          f"{name}: ServiceMonitor does not scrape HTTPS checked against the servers' CA")
                    server_name = tls.get("serverName", "")
                    check(server_name in certificate_names(docs),
                          f"{name}: ServiceMonitor's serverName {server_name!r} is not on the certificate")
        listen_port = int(flags.get("listen", ":0").rsplit(":", 1)[1])
        check(listen_port == ports.get("grpc"), f"{name}: --listen port {listen_port} != container grpc port")
        metrics_port = int(flags.get("metrics-listen", ":0").rsplit(":", 1)[1])
        check(metrics_port == ports.get("metrics"), f"{name}: --metrics-listen port != container metrics port")
        if "data-dir" in flags:
            data_mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data"]
            check(any(flags["data-dir"].startswith(m.rstrip("/") + "/") for m in data_mounts),
                  f"{name}: --data-dir {flags['data-dir']} is not on the data volume")
            claims = [c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])]
            check("data" in claims, f"{name}: no volume claim for the data volume")
        drain = flags.get("drain-timeout", "20s")
        drain_s = float(drain[:-1]) if drain.endswith("s") else 20.0
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        check(grace > pre_stop + drain_s, f"{name}: grace {grace}s does not cover preStop {pre_stop}s + drain {drain_s}s")

    if production:
        check_no_credentials(name, docs, placeholder_tokens)
        check_registry_image(name, container)
        check_monitoring(name, docs, services, repo)

    # Guaranteed QoS with whole CPUs, so the static CPU manager can give the
    # server cores of its own.
    res = container.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    check(req.get("cpu") is not None and req.get("cpu") == lim.get("cpu"),
          f"{name}: cpu request != cpu limit (not a Guaranteed pod)")
    check(str(req.get("cpu", "")).isdigit(), f"{name}: cpu request {req.get('cpu')} is not whole CPUs")
    check(req.get("memory") is not None and req.get("memory") == lim.get("memory"),
          f"{name}: memory request != memory limit (not a Guaranteed pod)")

    # Security: non-root, read-only root filesystem, no privilege escalation.
    sc = container.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True, f"{name}: root filesystem is writable")
    check(sc.get("allowPrivilegeEscalation") is False, f"{name}: privilege escalation allowed")
    check(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{name}: may run as root")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities not all dropped")
    seccomp = sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile", {})
    check(seccomp.get("type") == "RuntimeDefault", f"{name}: no RuntimeDefault seccomp profile")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    if shutil.which("kubectl") is None:
        print("kubectl not found: skipped")
        return 77
    root = sys.argv[1].rstrip("/")
    # Secrets the operator creates by name (docs/runbooks.md), with their keys.
    operator_secrets = {"qaqkv-tokens": {"tokens"}}
    check_overlay("base", render(f"{root}/base"),
                  {"data-dir": "/var/lib/qaqkv/data", "auth-tokens": "/etc/qaqkv/tokens/tokens"},
                  operator_secrets, overlay=False)
    dev = render(f"{root}/overlays/dev")
    check_overlay("dev", dev, {"memory-only": ""}, {})
    dev_tokens = tokens_of(dev)
    check(bool(dev_tokens), "dev: no token in its qaqkv-tokens Secret")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(root)))
    prod = render(f"{root}/overlays/prod")
    check_overlay("prod", prod,
                  {"tls-cert": "/etc/qaqkv/tls/tls.crt", "tls-key": "/etc/qaqkv/tls/tls.key",
                   "data-dir": "/var/lib/qaqkv/data"},
                  operator_secrets, production=True, placeholder_tokens=dev_tokens, repo=repo)
    check_worker("examples/worker", render(f"{root}/examples/worker"), prod)
    check_rebalance(root, prod, operator_secrets, dev_tokens)
    check_docker_context(repo)
    for f in FAILURES:
        print("FAIL:", f)
    print(f"{len(FAILURES)} failures")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
