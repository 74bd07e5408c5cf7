#!/usr/bin/env python3
"""Validates deploy/k8s/*.yaml offline: every resource against the Kubernetes JSON schema of its kind (PyPI
kubernetes-validate, strict: unknown fields are errors, so a misspelt key fails), then the references between
them (selectors match the pod labels, Services and the Ingress name existing ports, every $(VAR) in the
container's args comes from the ConfigMap, the probes are gRPC probes on the served port).

Usage: validate.py [DIR] [--k8s-version 1.29]. Exit 0 = valid, 1 = invalid, 77 = the validator is not installed
(tools/check.sh installs it into build/pyenv; set TANDEM_PYTHON to a Python that has it)."""
import glob
import os
import re
import subprocess
import sys

K8S_VERSION = "1.29"  # oldest version still supported by the major clouds; the grpc probe is GA since 1.27


def reexec_with_validator():
    """Runs this script with a Python that has kubernetes_validate, or exits 77 saying none has."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.environ.get("TANDEM_PYTHON", ""),
                  os.path.join(here, "..", "..", "build", "pyenv", "bin", "python")]
    # A venv's python is a symlink to the system one, so compare paths as given; the marker stops a loop.
    for py in candidates:
        if py and os.path.exists(py) and not os.environ.get("TANDEM_VALIDATE_REEXEC") and \
                subprocess.run([py, "-c", "import kubernetes_validate"], capture_output=True).returncode == 0:
            os.environ["TANDEM_VALIDATE_REEXEC"] = "1"
            os.execv(py, [py] + sys.argv)
    print("SKIPPED: the Python package kubernetes-validate is not installed (tools/check.sh installs it into "
          "build/pyenv; or pip install kubernetes-validate and set TANDEM_PYTHON)")
    sys.exit(77)


try:
    import yaml
    from kubernetes_validate import utils as kv
except ImportError:
    reexec_with_validator()


def cross_checks(resources):
    errors = []
    by_kind = {}
    for r in resources:
        by_kind.setdefault(r["kind"], []).append(r)
        ns = r["metadata"].get("namespace")
        if r["kind"] != "Namespace" and ns != "tandem":
            errors.append(f"{kv.kn(r)}: namespace {ns!r}, expected 'tandem'")
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind.get("ConfigMap", [])}
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        errors.append("no Deployment")
    pod_labels, pod_ports = {}, set()
    for d in deployments:
        spec = d["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        pod_labels = labels
        want = spec["selector"].get("matchLabels", {})
        if any(labels.get(k) != v for k, v in want.items()):
            errors.append(f"{kv.kn(d)}: selector {want} does not match the pod labels {labels}")
        for c in spec["template"]["spec"]["containers"]:
            ports = {p["containerPort"]: p.get("name") for p in c.get("ports", [])}
            pod_ports |= set(ports) | {n for n in ports.values() if n}
            env = set()
            for ref in c.get("envFrom", []):
                name = ref.get("configMapRef", {}).get("name")
                if name is not None:
                    if name not in configmaps:
                        errors.append(f"{kv.kn(d)}: envFrom names ConfigMap {name!r}, not in the manifests")
                    env |= set(configmaps.get(name, {}))
            env |= {e["name"] for e in c.get("env", [])}
            for arg in c.get("args", []) + c.get("command", []):
                for var in re.findall(r"\$\((\w+)\)", arg):
                    if var not in env:
                        errors.append(f"{kv.kn(d)}: argument {arg!r} uses $({var}), which no ConfigMap or env sets")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                p = c.get(probe)
                if not p or "grpc" not in p:
                    errors.append(f"{kv.kn(d)}: {probe} is not a grpc probe")
                elif p["grpc"]["port"] not in ports:
                    errors.append(f"{kv.kn(d)}: {probe} probes port {p['grpc']['port']}, not a container port")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for s in services.values():
        sel = s["spec"].get("selector", {})
        if any(pod_labels.get(k) != v for k, v in sel.items()):
            errors.append(f"{kv.kn(s)}: selector {sel} selects no pod of the Deployment")
        for p in s["spec"]["ports"]:
            if p.get("targetPort", p["port"]) not in pod_ports:
                errors.append(f"{kv.kn(s)}: targetPort {p.get('targetPort')} is not a container port")
    for ing in by_kind.get("Ingress", []):
        ann = ing["metadata"].get("annotations", {})
        if ann.get("nginx.ingress.kubernetes.io/upstream-hash-by") != "$http_x_tandem_route":
            errors.append(f"{kv.kn(ing)}: no consistent hashing on x-tandem-route: sessions would not be sticky")
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                b = path["backend"]["service"]
                svc = services.get(b["name"])
                if svc is None:
                    errors.append(f"{kv.kn(ing)}: backend Service {b['name']!r} is not in the manifests")
                elif b["port"].get("name") not in {p.get("name") for p in svc["spec"]["ports"]} and \
                        b["port"].get("number") not in {p["port"] for p in svc["spec"]["ports"]}:
                    errors.append(f"{kv.kn(ing)}: backend port {b['port']} is not a port of {b['name']}")
    return errors


def main():
    args = [a for a in sys.argv[1:]]
    version = K8S_VERSION
    if "--k8s-version" in args:
        i = args.index("--k8s-version")
        version = args[i + 1]
        del args[i:i + 2]
    folder = args[0] if args else os.path.dirname(os.path.abspath(__file__))
    files = sorted(glob.glob(os.path.join(folder, "*.yaml")))
    if not files:
        print(f"FAILED: no *.yaml in {folder}")
        return 1
    resources, bad = [], 0
    for f in files:
        try:
            docs = [d for d in yaml.safe_load_all(open(f)) if d]
        except yaml.YAMLError as e:
            print(f"ERROR {os.path.basename(f)}: not YAML: {e}")
            bad += 1
            continue
        for r in docs:
            try:
                kv.validate(r, version, strict=True)
                print(f"ok    {os.path.basename(f)}: {kv.kn(r)} (Kubernetes {version} schema, strict)")
                resources.append(r)
            except kv.ValidationError as e:
                print(f"ERROR {os.path.basename(f)}: {kv.kn(r)}: {'.'.join(map(str, e.path))}: {e.message}")
                bad += 1
            except kv.SchemaNotFoundError as e:  # every kind here is a built-in one: a missing schema is a typo
                print(f"ERROR {os.path.basename(f)}: {e.message}")
                bad += 1
    for e in cross_checks(resources):
        print("ERROR " + e)
        bad += 1
    print(f"{len(resources)} resources in {len(files)} files; {bad} errors")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
