"""Checks deploy/k8s against what the services need (run by Tests/Deploy/run.sh with PyYAML).

No Kubernetes schema validator is packaged on PyPI or Debian here, so this parses every
manifest and asserts the fields that matter: kinds and API versions, one StatefulSet per
service on its own ReadWriteOnce volume (SQLite: one replica, no database URL), native gRPC
probes on the configured port, a grace period longer than the drain, resource requests at least
the measured idle RSS, non-root and read-only containers, Services matching the pods, ConfigMaps
matching deploy/config/<service>.env, NetworkPolicies allowing exactly the expected callers and
callees, identity's OpenID Connect port published by an Ingress over TLS at the issuer URL's
host (and let in from the ingress controller's namespace alone), and Prometheus' DNS discovery
naming the headless Services.

The PostgreSQL mode (deploy/k8s/postgres/<service>-postgres.yaml, all four) is checked the same
way against deploy/config/<service>-postgres.env, as Deployments of three or more replicas
without volume claims (rolling update with a surge and none unavailable, a startup probe that
allows for migrations, a PodDisruptionBudget keeping two), under the same object names as the
SQLite files they replace and with the same resources; the database URL names the CloudNativePG
cluster's read-write Service and a database and role that cnpg-cluster.yaml makes, its password
is a file of the mounted Secret and never in the environment, and the NetworkPolicy lets the pods
out to the cluster's instances on the URL's port. cnpg-cluster.yaml: at least three instances,
synchronous replication, storage, initdb and postInitSQL making every service's database owned
by its role with C collation, managed roles without privileges whose connection limits and the
server's max_connections hold every replica's pool during a rolling update. Both kustomizations
list exactly the files of their mode, and `kubectl kustomize` builds each into exactly the
objects of those files.

    python check_k8s.py ROOT [RSS_JSON]   RSS_JSON: {"identity": bytes, ...} measured idle RSS
"""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = sys.argv[1]
K8S = f"{ROOT}/deploy/k8s"
RSS = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
SERVICES = {
    "identity": (50051, 9401, "smartschool.identity.v1.IdentityService"),
    "catalogue": (50052, 9402, "smartschool.catalogue.v1.CatalogueService"),
    "assessment": (50053, 9403, "smartschool.assessment.v1.AssessmentService"),
    "supervision": (50054, 9404, "smartschool.supervision.v1.SupervisionService"),
}
CALLS = {"identity": [], "catalogue": ["identity"], "assessment": ["identity"],
         "supervision": ["identity"]}
# Services with an HTTP port for browsers (identity's OpenID Connect provider), published by an
# Ingress from this ingress controller's namespace.
HTTP = {"identity"}
INGRESS_NAMESPACE = "ingress-nginx"
API = {"ConfigMap": "v1", "Secret": "v1", "Service": "v1", "Namespace": "v1",
       "StatefulSet": "apps/v1", "Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1",
       "NetworkPolicy": "networking.k8s.io/v1", "Ingress": "networking.k8s.io/v1"}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A PostgreSQL release's migrations run in the first new pod: its startup probe must allow this.
MIGRATION_SECONDS = 120
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


def load(path):
    return [d for d in yaml.safe_load_all(open(f"{K8S}/{path}")) if d]


def namespace_of(peer):
    return peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]


def peers(rule):
    """Pod names, namespaces (with their pod selector) and address ranges a peer list names."""
    names = set()
    for peer in rule:
        if "ipBlock" in peer:
            names.add("ip:" + peer["ipBlock"]["cidr"])
        elif "podSelector" in peer and "namespaceSelector" not in peer:
            names.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
        elif "namespaceSelector" in peer and "podSelector" not in peer:
            names.add("ns:" + namespace_of(peer))
        else:
            labels = peer["podSelector"]["matchLabels"]
            names.add("ns+pod:" + namespace_of(peer) + "/" +
                      ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return names


def kustomization(folder, want):
    """deploy/k8s/<folder>/kustomization.yaml lists exactly `want`, each of which exists."""
    where = f"k8s/{folder}/kustomization.yaml".replace("/./", "/")
    k = yaml.safe_load(open(f"{K8S}/{folder}/kustomization.yaml"))
    check(k.get("kind") == "Kustomization", f"{where}: kind Kustomization")
    check(sorted(k.get("resources", [])) == sorted(want),
          f"{where}: resources {k.get('resources')}, want {want}")
    for r in k.get("resources", []):
        path = f"{K8S}/{folder}/{r}"
        try:
            open(path if r.endswith(".yaml") else f"{path}/kustomization.yaml").close()
        except OSError:
            errors.append(f"{where}: {r} does not exist")


def built_by_kustomize(folder, files):
    """`kubectl kustomize` builds deploy/k8s/<folder> into exactly the objects of `files`."""
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not check(kubectl and os.access(kubectl, os.X_OK),
                 f"kubectl (for `kubectl kustomize`) is not installed: {kubectl}"):
        return
    run = subprocess.run([kubectl, "kustomize", f"{K8S}/{folder}"], capture_output=True,
                         text=True, timeout=120)
    if not check(run.returncode == 0,
                 f"kubectl kustomize k8s/{folder}: {run.stderr.strip()[-300:]}"):
        return
    built = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(run.stdout) if d}
    want = {(d["kind"], d["metadata"]["name"]) for f in files for d in load(f)}
    check(built == want, f"kubectl kustomize k8s/{folder}: objects differ: {built ^ want}")


kustomization(".", ["namespace"] + [f"{s}.yaml" for s in SERVICES])
kustomization("namespace", ["namespace.yaml"])
kustomization("postgres", ["../namespace"] + [f"{s}-postgres.yaml" for s in SERVICES])
built_by_kustomize(".", ["namespace/namespace.yaml"] + [f"{s}.yaml" for s in SERVICES])
built_by_kustomize("postgres", ["namespace/namespace.yaml"] +
                   [f"postgres/{s}-postgres.yaml" for s in SERVICES])
namespace_docs = load("namespace/namespace.yaml")
deny = [d for d in namespace_docs if d["kind"] == "NetworkPolicy"]
check(deny and deny[0]["spec"]["podSelector"] == {}
      and sorted(deny[0]["spec"]["policyTypes"]) == ["Egress", "Ingress"]
      and "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"],
      "namespace.yaml must hold a default-deny NetworkPolicy")


def secret_files(pod, container, secret):
    """{mounted path: Secret key} for the Secret's volumes mounted in the container."""
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    files = {}
    for v in pod.get("volumes", []):
        if v.get("secret", {}).get("secretName") != secret["metadata"]["name"]:
            continue
        items = v["secret"].get("items")
        entries = {i["path"]: i["key"] for i in items} if items else {k: k for k in keys}
        for m in container["volumeMounts"]:
            if m["name"] == v["name"]:
                files.update({f"{m['mountPath']}/{p}": k for p, k in entries.items()})
    return files


def check_ingress(where, ingresses, data, N, services, http_port):
    """The Ingress publishes the whole HTTP port over TLS at the issuer URL's host: one host,
    covered by a TLS certificate, every path to the ClusterIP Service's http port."""
    (ingress,) = ingresses
    spec = ingress["spec"]
    check(spec.get("ingressClassName"), f"{where}: the Ingress names its ingressClassName")
    issuer = data.get(f"SMARTSCHOOL_{N}_ISSUER_URL", "")
    m = re.fullmatch(r"https://([a-z0-9.-]+)", issuer)
    if not check(m, f"{where}: {N}_ISSUER_URL {issuer!r} must be https://HOST (no port, path "
                    "or trailing slash), the Ingress's host"):
        return
    rules = spec.get("rules", [])
    check([r.get("host") for r in rules] == [m.group(1)],
          f"{where}: the Ingress's rule host must be the issuer's host {m.group(1)}")
    tls_hosts = {h for t in spec.get("tls", []) if t.get("secretName") for h in t["hosts"]}
    check(m.group(1) in tls_hosts,
          f"{where}: the Ingress must serve {m.group(1)} over TLS (tls hosts {tls_hosts})")
    names = {s["metadata"]["name"]: s for s in services}
    for rule in rules:
        paths = rule.get("http", {}).get("paths", [])
        check([(p.get("path"), p.get("pathType")) for p in paths] == [("/", "Prefix")],
              f"{where}: the Ingress passes every path (/ Prefix): discovery, /authorize…")
        for p in paths:
            backend = p["backend"]["service"]
            target = names.get(backend["name"])
            if not check(target, f"{where}: Ingress backend {backend['name']} is not the "
                                 "ClusterIP Service"):
                continue
            by_name = {q["name"]: q["port"] for q in target["spec"]["ports"]}
            wanted = backend["port"].get("number", by_name.get(backend["port"].get("name")))
            check(wanted == http_port and by_name.get("http") == http_port,
                  f"{where}: the Ingress must reach the HTTP port {http_port}, not {wanted}")


def check_service(name, manifest, env_name, postgres):
    """Checks deploy/k8s/<manifest> of service `name` against deploy/config/<env_name>.env;
    `postgres`: the PostgreSQL mode (a Deployment of replicas sharing one database). Returns
    the objects' names, the database URL, the workload spec and the container's resources."""
    port, metrics_port, grpc_name = SERVICES[name]
    where = f"k8s/{manifest}"
    docs = load(manifest)
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
                   + (["PodDisruptionBudget"] if postgres else [])
                   + (["Ingress"] if name in HTTP else []))
    if not check(sorted(by_kind) == kinds, f"{where}: kinds {sorted(by_kind)}"):
        return None
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
    http_port = None
    if name in HTTP:
        http = data.get(f"SMARTSCHOOL_{N}_HTTP_PORT", "")
        if check(http.isdigit() and 0 < int(http) < 65536,
                 f"{where}: {N}_HTTP_PORT must be a port, not {http!r}"):
            http_port = int(http)
    if CALLS[name]:
        # identity's Service, by any of its DNS names, on identity's port.
        check(re.fullmatch(r"identity(\.smartschool(\.svc(\.cluster\.local)?)?)?:50051",
                           data.get(f"SMARTSCHOOL_{N}_IDENTITY_ADDR", "")) is not None,
              f"{where}: {N}_IDENTITY_ADDR must be identity's Service on 50051")

    url = data.get(f"SMARTSCHOOL_{N}_DATABASE_URL", "")
    headless = [s for s in by_kind["Service"] if s["spec"].get("clusterIP") == "None"]
    check(len(headless) == 1 and headless[0]["metadata"]["name"] == f"{name}-pods",
          f"{where}: one headless Service {name}-pods (Prometheus' discovery)")
    if postgres:
        # Deployment: replicas share the database; a new pod serves before an old one stops.
        check(spec["replicas"] >= 3, f"{where}: the PostgreSQL mode runs three or more replicas")
        check(spec["strategy"]["type"] == "RollingUpdate"
              and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
              and spec["strategy"]["rollingUpdate"]["maxSurge"] >= 1,
              f"{where}: rolling update with a surge and without an unavailable replica")
        check(re.fullmatch(r"postgres(ql)?://[^:@/]+@[^/]+/\w+(\?sslmode=[\w-]+)?", url)
              is not None, f"{where}: {N}_DATABASE_URL must name a database, without password")
        check(not [v for v in pod.get("volumes", []) if "persistentVolumeClaim" in v],
              f"{where}: no volume claim: the store is the database")
        (pdb,) = by_kind["PodDisruptionBudget"]
        check(pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
              and 2 <= pdb["spec"]["minAvailable"] < spec["replicas"],
              f"{where}: PodDisruptionBudget keeps two or more replicas, but not all")
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
    secret = by_kind["Secret"][0]
    secret_name = secret["metadata"]["name"]
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    from_env = {}  # variable -> Secret key, for what the container takes from the Secret
    for e in container["envFrom"]:
        if e.get("secretRef", {}).get("name") == secret_name:
            from_env.update({k: k for k in secret_keys})
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("name") == secret_name:
            check(ref.get("key") in secret_keys, f"{where}: env {e['name']}: no such Secret key")
            from_env[e["name"]] = ref.get("key")
    files = secret_files(pod, container, secret)
    check(from_env or files, f"{where}: the Secret is used")
    for v in ("CLIENT_ID", "CLIENT_SECRET") if CALLS[name] else ():
        check(f"SMARTSCHOOL_{N}_{v}" in from_env,
              f"{where}: SMARTSCHOOL_{N}_{v} (the service account) must come from the Secret")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    want_ports = {"grpc": port, "metrics": metrics_port}
    if name in HTTP:
        want_ports["http"] = http_port
    check(ports == want_ports, f"{where}: container ports {ports}, want {want_ports}")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    if not postgres:
        check(mounts.get(claims[0]["metadata"]["name"]) == data.get(f"SMARTSCHOOL_{N}_DATA_DIR"),
              f"{where}: the volume is mounted at the data dir")
    else:
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        data_dir = [n for n, path in mounts.items()
                    if path == data.get(f"SMARTSCHOOL_{N}_DATA_DIR")]
        check(len(data_dir) == 1 and "emptyDir" in volumes.get(data_dir[0], {}),
              f"{where}: an emptyDir at the (unused) data dir")
    # Every *_FILE setting names a file of the mounted Secret.
    for key, value in data.items():
        if key.endswith("_FILE") and value:
            check(value in files, f"{where}: {key}={value} is not a file of the mounted Secret")
    if postgres:
        password_file = data.get(f"SMARTSCHOOL_{N}_DATABASE_PASSWORD_FILE", "")
        check(password_file in files,
              f"{where}: the database password comes from a file of the Secret")
        leaked = [v for v, k in from_env.items() if k == files.get(password_file)]
        check(not leaked, f"{where}: the database password is in the environment as {leaked}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = container.get(probe, {})
        check(p.get("grpc", {}).get("port") == port,
              f"{where}: {probe} must be a native gRPC probe")
    check(container["readinessProbe"]["grpc"].get("service") == grpc_name,
          f"{where}: readiness asks for {grpc_name}")
    startup = container["startupProbe"]
    if postgres:
        allowed = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        check(allowed >= MIGRATION_SECONDS,
              f"{where}: the startup probe allows {allowed} s, under {MIGRATION_SECONDS} s "
              "for migrations")
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

    # Services select the pods and expose both ports by name; the ClusterIP Service also the
    # HTTP port, for the Ingress.
    for svc in by_kind["Service"]:
        check(svc["spec"]["selector"].items() <= pod_labels.items(), f"{where}: Service selector")
        sports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
        want_sports = {"grpc": (port, "grpc"), "metrics": (metrics_port, "metrics")}
        if name in HTTP and svc not in headless:
            want_sports["http"] = (http_port, "http")
        check(sports == want_sports, f"{where}: Service ports {sports}, want {want_sports}")
    if name in HTTP:
        check_ingress(where, by_kind["Ingress"], data, N,
                      [s for s in by_kind["Service"] if s not in headless], http_port)

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
    want_allowed = {port: callers, metrics_port: {"ns:monitoring"}}
    if name in HTTP:
        want_allowed[http_port] = {"ns:" + INGRESS_NAMESPACE}
    check(allowed == want_allowed,
          f"{where}: ingress {allowed}, want gRPC from {callers}, metrics from monitoring"
          + (f" and HTTP from {INGRESS_NAMESPACE}" if name in HTTP else ""))
    egress = {}
    for rule in ps["egress"]:
        for p in rule["ports"]:
            egress.setdefault((p["protocol"], p["port"]), set()).update(peers(rule["to"]))
    dns = {"ns+pod:kube-system/k8s-app=kube-dns"}
    want = {("UDP", 53): dns, ("TCP", 53): dns}
    for callee in CALLS[name]:
        want[("TCP", SERVICES[callee][0])] = {callee}
    database_peers = None
    if postgres:
        db_port = re.search(r"@[^/:]+:(\d+)/", url)
        db_port = int(db_port.group(1)) if db_port else 5432
        database_peers = egress.get(("TCP", db_port), set())
        want[("TCP", db_port)] = database_peers or {"the database server"}
    check(egress == want, f"{where}: egress {egress}, want {want}")
    names = {d["kind"]: d["metadata"]["name"] for d in docs if d["kind"] != "Service"} | {
        "Service": sorted(s["metadata"]["name"] for s in by_kind["Service"])}
    return {"names": names, "url": url, "spec": spec, "resources": resources,
            "database_peers": database_peers,
            "pool": int(data.get(f"SMARTSCHOOL_{N}_DATABASE_POOL_SIZE", "10"))}


def check_cluster(services):
    """deploy/k8s/postgres/cnpg-cluster.yaml against the services' database URLs."""
    where = "k8s/postgres/cnpg-cluster.yaml"
    docs = load("postgres/cnpg-cluster.yaml")
    clusters = [d for d in docs if d.get("kind") == "Cluster"]
    if not check(len(clusters) == 1 and clusters[0].get("apiVersion") == "postgresql.cnpg.io/v1",
                 f"{where}: one CloudNativePG Cluster (postgresql.cnpg.io/v1)"):
        return
    cluster = clusters[0]
    name, namespace = cluster["metadata"]["name"], cluster["metadata"].get("namespace")
    spec = cluster["spec"]
    check(any(d.get("kind") == "Namespace" and d["metadata"]["name"] == namespace for d in docs),
          f"{where}: the Namespace {namespace} is made here")
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"
               and d["metadata"].get("namespace") == namespace}
    instances = spec.get("instances", 1)
    check(instances >= 3, f"{where}: instances {instances}: a primary and two standbys at least")
    sync = spec.get("postgresql", {}).get("synchronous", {})
    least = sync.get("number", spec.get("minSyncReplicas", 0))
    most = sync.get("number", spec.get("maxSyncReplicas", 0))
    check(1 <= least <= most < instances,
          f"{where}: synchronous replication (min/maxSyncReplicas {least}/{most}): an "
          "acknowledged commit must be on a standby")
    check(str(spec.get("postgresql", {}).get("parameters", {})
              .get("synchronous_commit", "on")) in ("on", "remote_apply"),
          f"{where}: synchronous_commit must wait for the standby")
    check(quantity(spec.get("storage", {}).get("size", "0")) > 0, f"{where}: storage size")
    initdb = spec.get("bootstrap", {}).get("initdb", {})
    owners = {}  # database -> owner
    collations = {}
    if initdb.get("database"):
        owners[initdb["database"]] = initdb.get("owner", initdb["database"])
        collations[initdb["database"]] = initdb.get("localeCollate", "C")
    roles_made = set(owners.values())
    for statement in initdb.get("postInitSQL", []):
        m = re.match(r"CREATE DATABASE (\w+) OWNER (\w+)(.*)", statement, re.I)
        if m:
            owners[m.group(1)] = m.group(2)
            c = re.search(r"LC_COLLATE '([^']+)'", m.group(3), re.I)
            collations[m.group(1)] = c.group(1) if c else None
        m = re.match(r"CREATE ROLE (\w+)", statement, re.I)
        if m:
            roles_made.add(m.group(1))
        m = re.match(r"REVOKE ALL ON DATABASE (\w+) FROM PUBLIC", statement, re.I)
        if m:
            owners.setdefault(m.group(1), None)
    revoked = {re.match(r"REVOKE ALL ON DATABASE (\w+)", s, re.I).group(1)
               for s in initdb.get("postInitSQL", []) if re.match(r"REVOKE ALL ON DATABASE", s)}
    roles = {r["name"]: r for r in spec.get("managed", {}).get("roles", [])}
    max_connections = int(spec.get("postgresql", {}).get("parameters", {})
                          .get("max_connections", 100))
    hosts = {f"{name}-rw.{namespace}.svc", f"{name}-rw.{namespace}.svc.cluster.local"}
    pods = f"ns+pod:{namespace}/cnpg.io/cluster={name}"
    total = 0
    for service, info in services.items():
        m = re.fullmatch(r"postgres(?:ql)?://(\w+)@([^/:]+)(?::\d+)?/(\w+).*", info["url"])
        if not check(m, f"{where}: {service}'s URL {info['url']!r}"):
            continue
        role, host, database = m.groups()
        check(host in hosts, f"{service}'s URL host {host} is not the cluster's -rw Service")
        check(info["database_peers"] == {pods},
              f"{service}'s NetworkPolicy lets it out to {info['database_peers']}, not {pods}")
        check(database in owners and owners[database] == role,
              f"{where}: no database {database} owned by {role} ({service}'s URL)")
        check(collations.get(database) == "C", f"{where}: database {database} must collate C")
        check(database in revoked, f"{where}: REVOKE ALL ON DATABASE {database} FROM PUBLIC")
        check(role in roles_made or role == initdb.get("owner"),
              f"{where}: role {role} is made before its database")
        r = roles.get(role)
        if not check(r, f"{where}: managed.roles lacks {role}"):
            continue
        check(r.get("login") is True and r.get("ensure", "present") == "present"
              and not any(r.get(k) for k in ("superuser", "createdb", "createrole",
                                             "replication", "bypassrls")),
              f"{where}: role {role} may log in and nothing more")
        secret = secrets.get(r.get("passwordSecret", {}).get("name"))
        check(secret and secret.get("type") == "kubernetes.io/basic-auth"
              and secret.get("stringData", {}).get("username") == role,
              f"{where}: role {role}'s passwordSecret must be a basic-auth Secret for it")
        # Connections: every replica's pool, with the rolling update's extra pods.
        s = info["spec"]
        pods_at_most = s["replicas"] + s["strategy"]["rollingUpdate"]["maxSurge"]
        need = pods_at_most * info["pool"]
        total += need
        limit = r.get("connectionLimit", -1)
        check(limit == -1 or limit >= need,
              f"{where}: role {role}'s connectionLimit {limit} < {pods_at_most} pods x pool "
              f"{info['pool']}")
    check(max_connections >= total + 10,
          f"{where}: max_connections {max_connections} leaves under 10 spare over the "
          f"services' {total}")


sqlite = {name: check_service(name, f"{name}.yaml", name, postgres=False) for name in SERVICES}
postgres = {name: check_service(name, f"postgres/{name}-postgres.yaml", f"{name}-postgres",
                                postgres=True) for name in SERVICES}
for name in SERVICES:
    old, new = sqlite[name], postgres[name]
    if not (old and new):
        continue
    where = f"k8s/postgres/{name}-postgres.yaml"
    for kind in ("ConfigMap", "Secret", "Service", "NetworkPolicy"):
        check(new["names"][kind] == old["names"][kind],
              f"{where}: {kind} named as in {name}.yaml, which it replaces")
    check(new["names"]["Deployment"] == old["names"]["StatefulSet"],
          f"{where}: the Deployment is named as {name}.yaml's StatefulSet")
    check(new["resources"] == old["resources"], f"{where}: resources differ from {name}.yaml's")
if all(postgres.values()):
    check_cluster(postgres)

# Prometheus finds every pod through the headless Services.
prom = yaml.safe_load(open(f"{ROOT}/deploy/observability/prometheus.yml"))
dns = [c for job in prom["scrape_configs"] for c in job.get("dns_sd_configs", [])]
found = {(c["names"][0], c["port"]) for c in dns}
want = {(f"{s}-pods.smartschool.svc.cluster.local", mp) for s, (_, mp, _) in SERVICES.items()}
check(found == want, f"prometheus.yml DNS discovery {found} != {want}")

for e in errors:
    print("k8s:", e)
print(f"k8s: {len(SERVICES)} services in both modes, the PostgreSQL cluster and the "
      f"kustomizations checked, {len(errors)} problem(s)")
sys.exit(1 if errors else 0)
