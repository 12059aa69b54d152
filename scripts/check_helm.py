"""Checks of the Helm chart's renders that kubernetes-validate cannot make;
run by scripts/check-helm (with .venv's Python, which has PyYAML).

- Security defaults, on every render given: every container non-root with a
  read-only root filesystem, no privilege escalation, every capability
  dropped and the runtime's seccomp profile; no host namespaces or host
  paths; no service account token.
- The coordinator: probes, resources, a PodDisruptionBudget, the Service's
  ports; in the renders with default settings (the chart's ci/minimal-values
  and the plain manifests) two or more replicas, auth and TLS on, and no
  Secret at all.
- No render holds a token or password that its values did not give.
- The worker: terminationGracePeriodSeconds covers the drain_grace,
  kill_grace and hand-back time read back from the rendered worker.toml.
- The custom resources (no schema in kubernetes-validate): their required
  fields, that they point at what the chart renders, and that the
  PrometheusRule's groups are deploy/prometheus/hive-rules.yaml's.
- Bad input: values the chart must refuse, each with its message; and
  auth and TLS off render when the values say so explicitly.
"""

import argparse
import concurrent.futures
import pathlib
import re
import subprocess
import sys
import tomllib

import yaml

TOKEN = re.compile(r"hive_[aswvmt]_[0-9a-f]{64}")
UNITS = {"ms": 0.001, "msec": 0.001, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
         "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
         "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
         "d": 86400, "day": 86400, "days": 86400}
# The worker allows itself this long after drain_grace + kill_grace to hand tasks back.
HAND_BACK_SECONDS = 30
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"}
MINIMAL = ["--set", "database.existingSecret=db", "--set", "auth.existingSecret=admin",
           "--set", "tls.existingSecret=tls", "--set", "worker.token.existingSecret=worker"]

# Values the chart must refuse: (what, helm arguments, text its message must hold).
BAD_INPUTS = [
    ("the default values (no database)", [],
     "database: set database.existingSecret to a Secret holding the PostgreSQL URL"),
    ("the trial PostgreSQL without a password", ["--set", "postgresql.enabled=true"],
     "postgresql: set postgresql.auth.password"),
    ("no admin token and no auth.insecure", ["--set", "database.existingSecret=db"],
     "auth: set auth.existingSecret to a Secret holding an admin token"),
    ("an admin token that is not one", ["--set", "database.existingSecret=db", "--set", "auth.adminToken=secret"],
     "auth.adminToken is not an admin token"),
    ("no TLS certificate and no tls.enabled=false",
     ["--set", "database.existingSecret=db", "--set", "auth.existingSecret=admin"],
     "tls: set tls.existingSecret to a Secret with tls.crt, tls.key and ca.crt"),
    ("auth on, workers without a token", [*MINIMAL, "--set", "worker.token.existingSecret="],
     "worker.token: set worker.token.existingSecret"),
    ("a termination grace shorter than the drain", [*MINIMAL, "--set", "worker.terminationGracePeriodSeconds=60"],
     "worker.terminationGracePeriodSeconds (60) is shorter than a worker needs to drain"),
    ("a drain grace without a unit", [*MINIMAL, "--set-string", "worker.drainGrace=90"],
     "worker.drainGrace: \"90\" is not a duration"),
    ("the kubelet's gRPC probe with TLS on", [*MINIMAL, "--set", "coordinator.probes.kind=grpc"],
     "coordinator.probes.kind=grpc: the kubelet's gRPC probe cannot speak TLS"),
    ("a ServiceMonitor without a metrics token", [*MINIMAL, "--set", "serviceMonitor.enabled=true"],
     "serviceMonitor.tokenSecret.name: name a Secret holding a metrics token"),
    ("KEDA without a Prometheus", [*MINIMAL, "--set", "keda.enabled=true"],
     "keda.serverAddress: name the Prometheus"),
    ("a chart-owned key in coordinator.config", [*MINIMAL, "--set", "coordinator.config.auth.insecure=true"],
     "coordinator.config.auth: the chart sets it"),
    ("a misspelt value", [*MINIMAL, "--set", "worker.drainGrase=1h"],
     "additional properties 'drainGrase' not allowed"),
]


class Failed(Exception):
    pass


def check(ok, message):
    if not ok:
        raise Failed(message)


def seconds(text):
    parts = re.findall(r"([0-9]+) *([a-z]+)", text)
    check(parts and re.fullmatch(r"([0-9]+ *[a-z]+ *)+", text.strip()), f"not a duration: {text!r}")
    return sum(int(number) * UNITS[unit] for number, unit in parts)


def load(path):
    return [doc for doc in yaml.safe_load_all(pathlib.Path(path).read_text()) if doc]


def by_kind(docs, kind):
    return [doc for doc in docs if doc["kind"] == kind]


def component(docs, kind, name):
    found = [doc for doc in by_kind(docs, kind)
             if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name]
    check(len(found) == 1, f"one {kind} of the {name}, found {len(found)}")
    return found[0]


def strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def check_pod_security(workload):
    name = f"{workload['kind']} {workload['metadata']['name']}"
    spec = workload["spec"]["template"]["spec"]
    pod = spec.get("securityContext", {})
    check(spec.get("automountServiceAccountToken") is False, f"{name}: mounts a service account token")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        check(not spec.get(key), f"{name}: {key}")
    for volume in spec.get("volumes", []):
        check("hostPath" not in volume, f"{name}: hostPath volume {volume['name']}")
    for container in spec.get("initContainers", []) + spec["containers"]:
        where = f"{name}, container {container['name']}"
        own = container.get("securityContext", {})
        effective = {**pod, **own}
        check(effective.get("runAsNonRoot") is True, f"{where}: runAsNonRoot is not true")
        check(effective.get("runAsUser", 0) != 0, f"{where}: runs as uid 0")
        check(own.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable")
        check(own.get("allowPrivilegeEscalation") is False, f"{where}: allows privilege escalation")
        check(own.get("privileged") is not True, f"{where}: privileged")
        capabilities = own.get("capabilities", {})
        check("ALL" in capabilities.get("drop", []), f"{where}: does not drop ALL capabilities")
        check(not capabilities.get("add"), f"{where}: adds capabilities")
        check(effective.get("seccompProfile", {}).get("type") == "RuntimeDefault",
              f"{where}: seccomp profile is not RuntimeDefault")


def env_of(container):
    return {item["name"]: item for item in container.get("env", [])}


def check_coordinator(docs, defaults):
    deployment = component(docs, "Deployment", "coordinator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        check(probe in container, f"coordinator: no {probe}")
    resources = container.get("resources", {})
    check(resources.get("requests") and resources.get("limits", {}).get("memory"),
          "coordinator: no resource requests or memory limit")
    pdb = component(docs, "PodDisruptionBudget", "coordinator")
    check(pdb["spec"]["selector"]["matchLabels"].items()
          <= deployment["spec"]["template"]["metadata"]["labels"].items(),
          "coordinator: the PodDisruptionBudget does not select its pods")
    service = component(docs, "Service", "coordinator")
    ports = {port["name"]: port["port"] for port in service["spec"]["ports"]}
    check(ports.get("grpc") == 50051, "coordinator Service: no grpc port 50051")
    env = env_of(container)
    check("secretKeyRef" in env["DATABASE_URL"].get("valueFrom", {}) or "PGPASSWORD" in env,
          "coordinator: DATABASE_URL holds its password inline")
    if defaults:
        check(ports.get("http") == 9090, "coordinator Service: no http port 9090")
        check(deployment["spec"]["replicas"] >= 2, "coordinator: fewer than 2 replicas by default")
        check("HIVE_COORDINATOR__AUTH__ADMIN_TOKEN_FILE" in env, "coordinator: auth is off by default")
        check("HIVE_COORDINATOR__AUTH__INSECURE" not in env, "coordinator: insecure by default")
        check("HIVE_COORDINATOR__TLS__CERT" in env, "coordinator: TLS is off by default")
        command = container["readinessProbe"]["exec"]["command"]
        check("--tls-ca" in command, "coordinator: the probe does not speak TLS")
        check(not by_kind(docs, "Secret"), "the default render holds a Secret")
        check(any(policy["spec"]["podSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
                  for policy in by_kind(docs, "NetworkPolicy")), "coordinator: no NetworkPolicy by default")


def check_worker(docs, defaults):
    deployments = [doc for doc in by_kind(docs, "Deployment")
                   if doc["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    if not deployments:
        return
    deployment = deployments[0]
    config_map = component(docs, "ConfigMap", "worker")
    config = tomllib.loads(config_map["data"]["worker.toml"])
    drain = seconds(config["drain_grace"])
    kill = max([seconds(agent.get("kill_grace", "10s")) for agent in config["agents"].values()] + [10])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    check(grace >= drain + kill + HAND_BACK_SECONDS,
          f"worker: terminationGracePeriodSeconds {grace} < drain_grace {drain} + kill_grace {kill} "
          f"+ {HAND_BACK_SECONDS}")
    check(config["agents"], "worker: no agent")
    check(isinstance(config["slots"], int), "worker: slots is not an integer in worker.toml")
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    if defaults:
        check(env["HIVE_COORDINATOR"]["value"].startswith("https://"), "worker: dials plaintext by default")
        check("HIVE_TOKEN_FILE" in env and "HIVE_TLS_CA" in env, "worker: no token or CA by default")
        check(drain >= 30 * 60, "worker: drain_grace is below the agents' default timeout (30m)")


def check_custom_resources(docs, rules_groups):
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            check(doc.get("apiVersion") and doc.get("metadata", {}).get("name") and doc.get("spec"),
                  f"{doc['kind']}: no apiVersion, metadata.name or spec")
    for monitor in by_kind(docs, "ServiceMonitor"):
        service = component(docs, "Service", "coordinator")
        check(monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items(),
              "ServiceMonitor: does not select the coordinator Service")
        names = {port["name"] for port in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            check(endpoint["port"] in names, f"ServiceMonitor: no Service port {endpoint['port']}")
            check(endpoint.get("authorization", {}).get("credentials", {}).get("name"),
                  "ServiceMonitor: no metrics token")
    for monitor in by_kind(docs, "PodMonitor"):
        worker = component(docs, "Deployment", "worker")["spec"]["template"]
        check(monitor["spec"]["selector"]["matchLabels"].items() <= worker["metadata"]["labels"].items(),
              "PodMonitor: does not select the worker pods")
        names = {port["name"] for port in worker["spec"]["containers"][0].get("ports", [])}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            check(endpoint["port"] in names, f"PodMonitor: no worker port {endpoint['port']}")
    for scaled in by_kind(docs, "ScaledObject"):
        worker = component(docs, "Deployment", "worker")
        check(scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"],
              "ScaledObject: does not scale the worker Deployment")
        check("replicas" not in worker["spec"], "ScaledObject: the worker Deployment sets replicas too")
        check(scaled["spec"]["triggers"], "ScaledObject: no trigger")
    for rule in by_kind(docs, "PrometheusRule"):
        check(rule["spec"]["groups"] == rules_groups,
              "PrometheusRule: its groups are not deploy/prometheus/hive-rules.yaml's")


def check_secrets(docs, path):
    for doc in docs:
        for text in strings(doc):
            if TOKEN.search(text):
                check(doc["kind"] == "Secret" and "trial" in path,
                      f"{doc['kind']} {doc['metadata']['name']}: holds a token")
    for container in (c for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")
                      for c in doc["spec"]["template"]["spec"]["containers"]):
        for item in container.get("env", []):
            if re.search(r"PASSWORD|TOKEN$|SECRET|KEY$", item["name"]) and "value" in item:
                check(item["value"].startswith("/"), f"container {container['name']}: {item['name']} given inline")


def check_render(path, rules_groups, defaults):
    docs = load(path)
    for workload in by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet"):
        check_pod_security(workload)
    check_coordinator(docs, defaults)
    check_worker(docs, defaults)
    check_custom_resources(docs, rules_groups)
    check_secrets(docs, path)


def refuses(helm, chart, what, arguments, message):
    run = subprocess.run([helm, "template", "hive", chart, *arguments], capture_output=True, text=True)
    if run.returncode == 0:
        return f"{what}: rendered, but must be refused"
    if message not in run.stderr:
        return f"{what}: refused without the message {message!r}:\n{run.stderr.strip()}"
    return None


def renders_insecure_when_told(helm, chart):
    """auth.insecure=true and tls.enabled=false, said explicitly, render a
    plaintext coordinator without auth, and workers without a token."""
    run = subprocess.run([helm, "template", "hive", chart, "--set", "database.existingSecret=db",
                          "--set", "auth.insecure=true", "--set", "tls.enabled=false"],
                         capture_output=True, text=True)
    check(run.returncode == 0, f"auth.insecure=true with tls.enabled=false is refused:\n{run.stderr.strip()}")
    docs = [doc for doc in yaml.safe_load_all(run.stdout) if doc]
    coordinator = env_of(component(docs, "Deployment", "coordinator")["spec"]["template"]["spec"]["containers"][0])
    worker = env_of(component(docs, "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0])
    check(coordinator["HIVE_COORDINATOR__AUTH__INSECURE"]["value"] == "true", "insecure: the coordinator is not told")
    check("HIVE_COORDINATOR__AUTH__ADMIN_TOKEN_FILE" not in coordinator, "insecure: an admin token file is set")
    check(worker["HIVE_COORDINATOR"]["value"].startswith("http://"), "insecure: workers dial https")
    check("HIVE_TOKEN_FILE" not in worker, "insecure: workers read a token file")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--helm", required=True)
    parser.add_argument("--chart", required=True)
    parser.add_argument("--rules", required=True)
    parser.add_argument("--plain", required=True)
    parser.add_argument("renders", nargs="+")
    args = parser.parse_args()
    rules_groups = yaml.safe_load(pathlib.Path(args.rules).read_text())["groups"]

    try:
        for path in [*args.renders, args.plain]:
            defaults = path == args.plain or path.endswith("minimal-values.yaml")
            check_render(path, rules_groups, defaults)
            print(f"check-helm: ok   security defaults, secrets, probes, grace, custom resources: "
                  f"{pathlib.Path(path).name}{' (defaults)' if defaults else ''}")
    except Failed as failure:
        print(f"check-helm: FAIL {path}: {failure}", file=sys.stderr)
        sys.exit(1)

    try:
        renders_insecure_when_told(args.helm, args.chart)
    except Failed as failure:
        print(f"check-helm: FAIL {failure}", file=sys.stderr)
        sys.exit(1)
    print("check-helm: ok   auth.insecure=true and tls.enabled=false, said explicitly, render without auth or TLS")

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        problems = list(pool.map(lambda case: refuses(args.helm, args.chart, *case), BAD_INPUTS))
    failures = [problem for problem in problems if problem]
    for problem in failures:
        print(f"check-helm: FAIL bad input: {problem}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"check-helm: ok   refused with their messages: {len(BAD_INPUTS)} bad inputs "
          f"(no database, no auth, no TLS, grace shorter than the drain, …)")


if __name__ == "__main__":
    main()
