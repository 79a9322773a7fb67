"""Checks deploy/k8s against what the services need (run by Tests/Deploy/run.sh with PyYAML).

No Kubernetes schema validator is packaged on PyPI or Debian here, so this parses every
manifest and asserts the fields that matter: kinds and API versions, one StatefulSet per
service on its own ReadWriteOnce volume (SQLite: one replica, no database URL), native gRPC
probes on the configured port, a grace period longer than the drain, resource requests at least
the measured idle RSS, non-root and read-only containers, Services matching the pods, ConfigMaps
matching deploy/config/<service>.env, NetworkPolicies allowing exactly the expected callers and
callees, and Prometheus' DNS discovery naming the headless Services.

identity-postgres.yaml, identity's PostgreSQL variant, is checked the same way against
deploy/config/identity-postgres.env, as a Deployment of several replicas without volumes whose
database URL comes from the ConfigMap and password from a file of the mounted Secret, kept
available by a PodDisruptionBudget, allowed out to the database's port, under the same object
names as identity.yaml (so it replaces it in kustomization.yaml).

    python check_k8s.py ROOT [RSS_JSON]   RSS_JSON: {"identity": bytes, ...} measured idle RSS
"""
import json
import re
import sys

import yaml

ROOT = sys.argv[1]
RSS = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
SERVICES = {
    "identity": (50051, 9401, "smartschool.identity.v1.IdentityService"),
    "catalogue": (50052, 9402, "smartschool.catalogue.v1.CatalogueService"),
    "assessment": (50053, 9403, "smartschool.assessment.v1.AssessmentService"),
    "supervision": (50054, 9404, "smartschool.supervision.v1.SupervisionService"),
}
CALLS = {"identity": [], "catalogue": ["identity"], "assessment": ["identity"],
         "supervision": ["identity"]}
API = {"ConfigMap": "v1", "Secret": "v1", "Service": "v1", "Namespace": "v1",
       "StatefulSet": "apps/v1", "Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1",
       "NetworkPolicy": "networking.k8s.io/v1"}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
errors = []


def check(condition, message):
    if not condition:
        errors.append(message)
    return condition


def quantity(text):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(text))
    if not m:
        raise ValueError(f"bad quantity {text!r}")
    return int(m.group(1)) * units.get(m.group(2), 1)


def env_file(name):
    values = {}
    for line in open(f"{ROOT}/deploy/config/{name}.env", encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def namespace_of(peer):
    return peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]


def peers(rule):
    """Pod names, namespaces and address ranges a NetworkPolicy peer list names."""
    names = set()
    for peer in rule:
        if "ipBlock" in peer:
            names.add("ip:" + peer["ipBlock"]["cidr"])
        elif "podSelector" in peer and "namespaceSelector" not in peer:
            names.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
        elif "namespaceSelector" in peer and "podSelector" not in peer:
            names.add("ns:" + namespace_of(peer))
        else:
            names.add("ns+pod:" + namespace_of(peer))
    return names


kustomization = yaml.safe_load(open(f"{ROOT}/deploy/k8s/kustomization.yaml"))
check(sorted(kustomization["resources"]) ==
      sorted(["namespace.yaml"] + [f"{s}.yaml" for s in SERVICES]),
      "kustomization.yaml must list namespace.yaml and every service's file")
namespace_docs = list(yaml.safe_load_all(open(f"{ROOT}/deploy/k8s/namespace.yaml")))
deny = [d for d in namespace_docs if d["kind"] == "NetworkPolicy"]
check(deny and deny[0]["spec"]["podSelector"] == {}
      and sorted(deny[0]["spec"]["policyTypes"]) == ["Egress", "Ingress"]
      and "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"],
      "namespace.yaml must hold a default-deny NetworkPolicy")


def check_service(name, manifest, env_name, postgres):
    """Checks deploy/k8s/<manifest> of service `name` against deploy/config/<env_name>.env;
    `postgres`: the PostgreSQL variant (a Deployment of replicas sharing one database)."""
    port, metrics_port, grpc_name = SERVICES[name]
    where = f"k8s/{manifest}"
    docs = [d for d in yaml.safe_load_all(open(f"{ROOT}/deploy/k8s/{manifest}")) if d]
    by_kind = {}
    for d in docs:
        kind = d.get("kind")
        check(kind in API and d.get("apiVersion") == API[kind],
              f"{where}: bad kind/apiVersion {kind}")
        check(DNS1123.match(d["metadata"]["name"]) is not None,
              f"{where}: bad name {d['metadata']}")
        check(d["metadata"].get("namespace") == "smartschool",
              f"{where}: {kind} not in smartschool")
        by_kind.setdefault(kind, []).append(d)
    workload = "Deployment" if postgres else "StatefulSet"
    kinds = sorted(["ConfigMap", "NetworkPolicy", "Secret", "Service", workload]
                   + (["PodDisruptionBudget"] if postgres else []))
    if not check(sorted(by_kind) == kinds, f"{where}: kinds {sorted(by_kind)}"):
        return
    config = by_kind["ConfigMap"][0]
    spec = by_kind[workload][0]["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    N = name.upper()

    # ConfigMap: the env file's keys (less TLS, see the ConfigMap's comment), same ports.
    data = config["data"]
    env = env_file(env_name)
    tls = {f"SMARTSCHOOL_{N}_TLS_{k}" for k in ("CERT", "KEY", "CA")}
    differ = sorted(set(data) ^ (set(env) - tls))
    check(not differ, f"{where}: ConfigMap keys differ from config/{env_name}.env: {differ}")
    check(all(isinstance(v, str) for v in data.values()),
          f"{where}: ConfigMap values must be strings")
    check(data.get(f"SMARTSCHOOL_{N}_PORT") == str(port), f"{where}: gRPC port")
    check(data.get(f"SMARTSCHOOL_{N}_METRICS_PORT") == str(metrics_port), f"{where}: metrics port")
    drain = int(data.get(f"SMARTSCHOOL_{N}_DRAIN_SECONDS", "20"))

    url = data.get(f"SMARTSCHOOL_{N}_DATABASE_URL", "")
    headless = [s for s in by_kind["Service"] if s["spec"].get("clusterIP") == "None"]
    check(len(headless) == 1 and headless[0]["metadata"]["name"] == f"{name}-pods",
          f"{where}: one headless Service {name}-pods (Prometheus' discovery)")
    if postgres:
        # Deployment: replicas share the database; a new pod serves before an old one stops.
        check(spec["replicas"] >= 2, f"{where}: the PostgreSQL variant runs several replicas")
        check(spec["strategy"]["type"] == "RollingUpdate"
              and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0,
              f"{where}: rolling update without an unavailable replica")
        check(re.fullmatch(r"postgres(ql)?://[^:@/]+@[^/]+/\w+(\?sslmode=[\w-]+)?", url)
              is not None, f"{where}: {N}_DATABASE_URL must name a database, without password")
        check(not [v for v in pod.get("volumes", []) if "persistentVolumeClaim" in v],
              f"{where}: no volume claim: the store is the database")
        (pdb,) = by_kind["PodDisruptionBudget"]
        check(pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
              and 1 <= pdb["spec"]["minAvailable"] < spec["replicas"],
              f"{where}: PodDisruptionBudget keeps some but not all replicas")
    else:
        # StatefulSet: one writer, its own volume, ordered rolling update.
        check(spec["replicas"] == 1, f"{where}: SQLite has one writer: replicas must be 1")
        check(url == "", f"{where}: a StatefulSet on SQLite sets no {N}_DATABASE_URL")
        check(spec["updateStrategy"]["type"] == "RollingUpdate", f"{where}: rolling update")
        claims = spec["volumeClaimTemplates"]
        check(len(claims) == 1 and claims[0]["spec"]["accessModes"] == ["ReadWriteOnce"],
              f"{where}: one ReadWriteOnce claim")
        check(headless[0]["metadata"]["name"] == spec["serviceName"],
              f"{where}: serviceName must be the headless Service")
    check(spec["selector"]["matchLabels"].items() <= pod_labels.items(), f"{where}: selector")
    check(pod_labels.get("app.kubernetes.io/part-of") == "smartschool", f"{where}: part-of label")
    check(pod["securityContext"].get("runAsNonRoot") is True, f"{where}: runAsNonRoot")
    (container,) = pod["containers"]
    check(container["command"] == [f"{name}-service"], f"{where}: command picks the service")
    sc = container["securityContext"]
    check(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
          and sc["capabilities"]["drop"] == ["ALL"], f"{where}: container hardening")
    check({"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"],
          f"{where}: envFrom the ConfigMap")
    secret_name = by_kind["Secret"][0]["metadata"]["name"]
    secret_used = any(
        e.get("secretRef", {}).get("name") == secret_name for e in container["envFrom"]
    ) or any(v.get("secret", {}).get("secretName") == secret_name for v in pod.get("volumes", []))
    check(secret_used, f"{where}: the Secret is used")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(ports == {"grpc": port, "metrics": metrics_port}, f"{where}: container ports {ports}")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    if not postgres:
        check(mounts.get(claims[0]["metadata"]["name"]) == data.get(f"SMARTSCHOOL_{N}_DATA_DIR"),
              f"{where}: the volume is mounted at the data dir")
    # Every *_FILE setting names a key of the Secret, mounted where the setting says.
    secret = by_kind["Secret"][0]
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    secret_volumes = {v["name"] for v in pod.get("volumes", [])
                      if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]}
    secret_dirs = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in secret_volumes}
    for key, value in data.items():
        if key.endswith("_FILE") and value:
            directory, _, file = value.rpartition("/")
            check(directory in secret_dirs and file in secret_keys,
                  f"{where}: {key}={value} is not a key of the mounted Secret")
    if postgres:
        check(data.get(f"SMARTSCHOOL_{N}_DATABASE_PASSWORD_FILE"),
              f"{where}: the database password comes from a file of the Secret")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = container.get(probe, {})
        check(p.get("grpc", {}).get("port") == port,
              f"{where}: {probe} must be a native gRPC probe")
    check(container["readinessProbe"]["grpc"].get("service") == grpc_name,
          f"{where}: readiness asks for {grpc_name}")
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = int(pre_stop[1]) if pre_stop[0] == "sleep" else 0
    check(pod["terminationGracePeriodSeconds"] > drain + pause,
          f"{where}: grace period must exceed drain ({drain}s) + preStop ({pause}s)")
    resources = container["resources"]
    request = quantity(resources["requests"]["memory"])
    limit = quantity(resources["limits"]["memory"])
    check("cpu" in resources["requests"] and limit >= request, f"{where}: requests/limits")
    if name in RSS:
        check(request >= RSS[name],
              f"{where}: memory request {request} below measured RSS {RSS[name]}")
        check(limit >= 2 * RSS[name], f"{where}: memory limit {limit} leaves no headroom over RSS")

    # Services select the pods and expose both ports by name.
    for svc in by_kind["Service"]:
        check(svc["spec"]["selector"].items() <= pod_labels.items(), f"{where}: Service selector")
        sports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
        check(sports == {"grpc": (port, "grpc"), "metrics": (metrics_port, "metrics")},
              f"{where}: Service ports {sports}")

    # NetworkPolicy: exactly the expected callers and callees.
    (policy,) = by_kind["NetworkPolicy"]
    ps = policy["spec"]
    check(ps["podSelector"]["matchLabels"].items() <= pod_labels.items(),
          f"{where}: policy selector")
    check(sorted(ps["policyTypes"]) == ["Egress", "Ingress"], f"{where}: policy types")
    allowed = {}
    for rule in ps["ingress"]:
        for p in rule["ports"]:
            allowed.setdefault(p["port"], set()).update(peers(rule["from"]))
    callers = {c for c, callees in CALLS.items() if name in callees} | {"ns:municipal-platform"}
    check(allowed == {port: callers, metrics_port: {"ns:monitoring"}},
          f"{where}: ingress {allowed}, want gRPC from {callers} and metrics from monitoring")
    egress = {}
    for rule in ps["egress"]:
        for p in rule["ports"]:
            egress.setdefault((p["protocol"], p["port"]), set()).update(peers(rule["to"]))
    want = {("UDP", 53): {"ns+pod:kube-system"}, ("TCP", 53): {"ns+pod:kube-system"}}
    for callee in CALLS[name]:
        want[("TCP", SERVICES[callee][0])] = {callee}
    if postgres:
        db_port = re.search(r"@[^/:]+:(\d+)/", url)
        db_port = int(db_port.group(1)) if db_port else 5432
        want[("TCP", db_port)] = egress.get(("TCP", db_port)) or {"the database server"}
    check(egress == want, f"{where}: egress {egress}, want {want}")
    return {d["kind"]: d["metadata"]["name"] for d in docs if d["kind"] != "Service"} | {
        "Service": sorted(s["metadata"]["name"] for s in by_kind["Service"])}


names = {name: check_service(name, f"{name}.yaml", name, postgres=False) for name in SERVICES}
postgres_names = check_service("identity", "identity-postgres.yaml", "identity-postgres",
                               postgres=True)
if names["identity"] and postgres_names:
    for kind in ("ConfigMap", "Secret", "Service", "NetworkPolicy"):
        check(postgres_names[kind] == names["identity"][kind],
              f"k8s/identity-postgres.yaml: {kind} named as in identity.yaml, which it replaces")
    check(postgres_names["Deployment"] == names["identity"]["StatefulSet"],
          "k8s/identity-postgres.yaml: the Deployment is named as identity.yaml's StatefulSet")

# Prometheus finds every pod through the headless Services.
prom = yaml.safe_load(open(f"{ROOT}/deploy/observability/prometheus.yml"))
dns = [c for job in prom["scrape_configs"] for c in job.get("dns_sd_configs", [])]
found = {(c["names"][0], c["port"]) for c in dns}
want = {(f"{s}-pods.smartschool.svc.cluster.local", mp) for s, (_, mp, _) in SERVICES.items()}
check(found == want, f"prometheus.yml DNS discovery {found} != {want}")

for e in errors:
    print("k8s:", e)
print(f"k8s: {len(SERVICES)} services and identity-postgres.yaml checked, "
      f"{len(errors)} problem(s)")
sys.exit(1 if errors else 0)
