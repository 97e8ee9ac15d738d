"""The rendered Kubernetes manifests agree with the gateway and its image.

Run by scripts/check-deploy.sh with the deploy venv's Python (PyYAML comes
with kubernetes-validate): `check-deploy.py <rendered.yaml> <gateway.toml>
<Dockerfile> <overlay>`. Prints one `ok:` line per check, or the first
failure and exits 1. tomllib is in Python 3.11's standard library.
"""
import re
import sys
import tomllib

import yaml

rendered, toml_path, dockerfile_path, overlay = sys.argv[1:5]
objects = [o for o in yaml.safe_load_all(open(rendered)) if o]
config = tomllib.load(open(toml_path, "rb"))
dockerfile = open(dockerfile_path).read()
checks = 0


def ok(what):
    global checks
    checks += 1
    print(f"check-deploy: {overlay}: ok: {what}")


def check(cond, what):
    if not cond:
        print(f"check-deploy: {overlay}: FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    ok(what)


def one(kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    check(len(found) == 1, f"one {kind} {name}")
    return found[0]


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert m, text
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, "m": 60 * n}[m.group(2)]


gw = config.get("gateway", {})
deploy = one("Deployment", "mcp-gateway")
pod = deploy["spec"]["template"]["spec"]
c = [c for c in pod["containers"] if c["name"] == "gateway"][0]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}

# Ports: the config's listeners, the image's EXPOSE, the Service.
listen, admin = port_of(gw["listen"]), port_of(config["admin"]["listen"])
check(ports == {"http": listen, "metrics": admin}, f"container ports {ports} are gateway.listen and admin.listen")
expose = re.search(r"^EXPOSE (.*)$", dockerfile, re.M).group(1).split()
check([int(p) for p in expose] == [listen, admin], f"the image exposes {expose}")
svc = one("Service", "mcp-gateway")
metrics_svc = one("Service", "mcp-gateway-metrics")
check({p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"http": "http"}, "the Service serves http only")
check({p["name"]: p["targetPort"] for p in metrics_svc["spec"]["ports"]} == {"metrics": "metrics"},
      "/metrics has a Service of its own")
for s in (svc, metrics_svc):
    check(s["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items(),
          f"{s['metadata']['name']} selects the gateway's pods")

# Probes: /readyz for readiness, /healthz for liveness, on the main listener.
check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, "readiness on /readyz")
check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, "liveness on /healthz")

# Drain: preStop + drain_delay + drain_timeout fit in the grace period, with
# time left to stop the upstreams.
pre = c["lifecycle"]["preStop"]["exec"]["command"]
check(pre[0] == "sleep", "preStop sleeps")
total = int(pre[1]) + seconds(gw.get("drain_delay", "0s")) + seconds(gw.get("drain_timeout", "10s"))
grace = pod["terminationGracePeriodSeconds"]
check(total + 10 <= grace,
      f"preStop {pre[1]} s + drain_delay + drain_timeout = {total} s, 10 s less than the grace period {grace} s")

# Mounts: the config as a folder (no subPath) where the image's CMD reads it,
# the secrets where gateway.secrets_file points, the state where the config
# writes, all on volumes (the root filesystem is read-only).
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
check(all("subPath" not in m for m in mounts.values()), "no subPath: changes reach the pod")
cmd = re.search(r'^CMD \[(.*)\]$', dockerfile, re.M).group(1)
config_path = [a.strip(' "') for a in cmd.split(",")][-1]
check(c.get("args", [])[-1] == config_path, f"the pod and the image read {config_path}")
check(config_path.rsplit("/", 1)[0] in mounts, "the config's folder is mounted")
volumes = {v["name"]: v for v in pod["volumes"]}
config_volume = volumes[mounts[config_path.rsplit("/", 1)[0]]["name"]]
cm = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == config_volume["configMap"]["name"]]
check(len(cm) == 1 and "gateway.toml" in cm[0]["data"], "the mounted ConfigMap holds gateway.toml")
check(tomllib.loads(cm[0]["data"]["gateway.toml"]) == config, f"the ConfigMap is {toml_path}")
secrets_dir, secrets_file = gw["secrets_file"].rsplit("/", 1)
check(secrets_dir in mounts, f"the secrets' folder {secrets_dir} is mounted")
secret = [o for o in objects if o["kind"] == "Secret"
          and o["metadata"]["name"] == volumes[mounts[secrets_dir]["name"]]["secret"]["secretName"]]
check(len(secret) == 1 and secrets_file in secret[0]["data"], f"the mounted Secret holds {secrets_file}")
state = "/var/lib/mcp-gateway"
check(re.search(rf"^WORKDIR {state}$", dockerfile, re.M) is not None, "the image works in the state folder")
check(state in mounts and "emptyDir" in volumes[mounts[state]["name"]], "the state folder is a volume")
written = [gw.get("token_file"), gw.get("catalog_cache"), config.get("audit", {}).get("path")]
check(all(p and p.startswith(state + "/") for p in written), f"every file the gateway writes is under {state}")

# Who runs it: the image's numeric user, not root, read-only root.
uid, gid = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M).groups()
sc = pod["securityContext"]
check(sc["runAsNonRoot"] and sc["runAsUser"] == int(uid) and sc["runAsGroup"] == int(gid),
      f"runs as the image's user {uid}:{gid}")
check(c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"],
      "read-only root filesystem, no capabilities")
check("resources" in c and "requests" in c["resources"], "resource requests")

# Redis: present with [redis] (the base), absent without (single).
redis = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mcp-gateway-redis"]
check(bool(redis) == ("redis" in config), "Redis is deployed exactly when the config has [redis]")
hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
if "redis" in config:
    check(len(hpas) == 1 and hpas[0]["spec"]["minReplicas"] >= 2, "an autoscaler keeps several replicas with Redis")
    check("replicas" not in deploy["spec"], "the Deployment leaves the count to the autoscaler")
    pdb = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    check(len(pdb) == 1 and pdb[0]["spec"].get("maxUnavailable") == 1, "a drain takes one replica at a time")
else:
    check(deploy["spec"]["replicas"] == 1 and not hpas, "one replica without Redis, and no autoscaler")
# Egress: never to link-local (cloud metadata).
policy = one("NetworkPolicy", "mcp-gateway")
blocks = [t["ipBlock"] for e in policy["spec"].get("egress", []) for t in e.get("to", []) if "ipBlock" in t]
check("Egress" in policy["spec"]["policyTypes"] and blocks and all(
    "169.254.0.0/16" in b.get("except", []) or b["cidr"] == "::/0" for b in blocks),
      "egress excludes link-local addresses (instance metadata)")

# The ServiceMonitor (when rendered) scrapes the metrics port of the Service.
for sm in [o for o in objects if o["kind"] == "ServiceMonitor"]:
    check(sm["spec"]["selector"]["matchLabels"].items() <= metrics_svc["metadata"]["labels"].items()
          and not sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
          "the ServiceMonitor selects the metrics Service, not the main one")
    check(sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["path"] == "/metrics",
          "the ServiceMonitor scrapes /metrics on the metrics port")

print(f"check-deploy: {overlay}: {checks} checks")
