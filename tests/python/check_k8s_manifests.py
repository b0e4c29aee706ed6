"""Checks refbus's Kubernetes manifests (deploy/k8s) for crates/cli/tests/deploy_files.rs.

    check_k8s_manifests.py <manifest directory> <Kubernetes version>

Every document of every *.yaml file is validated against that Kubernetes version's OpenAPI
schemas in strict mode (unknown fields refused), with the schemas the pinned kubernetes-validate
package bundles: nothing is fetched. Then what the schemas cannot say, refbus's own rules: every
container runs non-root, read-only, without capabilities and with resources; an adapter has a
gRPC probe and every component with a metrics port probes /metrics; every file a refbus container
is given lies in one of its mounts, and every file of its Secret exists in the Secret's template;
the Secrets hold only CHANGE-ME placeholders.

Prints, as JSON on stdout, the arguments of every refbus container (the test checks each flag
against `refbus <command> --help`); problems go to stderr and make the exit status 1.
"""

import json
import pathlib
import sys

import kubernetes_validate
import yaml

WORKLOADS = {"Deployment", "StatefulSet"}
SECRETS_TEMPLATE = "secrets.example.yaml"


def describe(document):
    return f"{document.get('kind')} {document.get('metadata', {}).get('name')}"


def load(directory):
    """Every document of every manifest, as (file name, document)."""
    documents = []
    for path in sorted(directory.glob("*.yaml")):
        with path.open() as handle:
            for document in yaml.safe_load_all(handle):
                if document is not None:
                    documents.append((path.name, document))
    return documents


def validator_refuses_a_bad_manifest(version):
    """The check could fail: a replica count that is a string must be refused."""
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bad"},
        "spec": {
            "replicas": "three",
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    try:
        kubernetes_validate.validate(bad, version, strict=True)
    except kubernetes_validate.ValidationError:
        return True
    return False


def secret_files(documents):
    """The keys of every Secret of the template, by Secret name; and problems with them."""
    files, problems = {}, []
    for name, document in documents:
        if document.get("kind") != "Secret":
            continue
        secret = document["metadata"]["name"]
        if name != SECRETS_TEMPLATE:
            problems.append(f"{name}: Secret {secret} outside {SECRETS_TEMPLATE}")
        if "data" in document:
            problems.append(f"{name}: Secret {secret} has data: templates hold stringData only")
        for key, value in document.get("stringData", {}).items():
            if "CHANGE-ME" not in value:
                problems.append(f"{name}: Secret {secret} key {key} is not a CHANGE-ME placeholder")
        files[secret] = set(document.get("stringData", {}))
    return files, problems


def check_container(where, container, pod, secrets, problems):
    context = container.get("securityContext", {})
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem is not true")
    if context.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{where}: capabilities do not drop ALL")
    resources = container.get("resources", {})
    if not resources.get("requests") or not resources.get("limits"):
        problems.append(f"{where}: no resource requests and limits")

    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount, volume in mounts.items():
        if volume not in volumes and volume not in pod.get("_claims", set()):
            problems.append(f"{where}: mount {mount} names no volume {volume}")

    if "refbus" not in container["image"]:
        return None
    args = container.get("args", [])
    if container.get("command"):
        return None  # the init container: sh, not refbus
    paths = [a.split("=", 1)[1] for a in args if a.startswith("--") and "=/" in a]
    for env in container.get("envFrom", []):
        if env.get("configMapRef", {}).get("name") == "refbus-env":
            paths.append(pod["_env"]["REFBUS_NATS_CA"])
    for path in paths:
        mount = next((m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")), None)
        if mount is None:
            problems.append(f"{where}: {path} is in none of its mounts")
            continue
        volume = volumes.get(mounts[mount], {})
        if mount == "/run/refbus":
            secret = volumes.get("secret", {}).get("secret", {}).get("secretName")
            file = path[len(mount) + 1 :]
            if file not in secrets.get(secret, set()):
                problems.append(f"{where}: {path}: Secret {secret} has no key {file}")
        elif "configMap" in volume and "items" in volume["configMap"]:
            file = path[len(mount) + 1 :]
            items = {i["path"] for i in volume["configMap"]["items"]}
            if file not in items and not any(i.startswith(file + "/") for i in items):
                problems.append(f"{where}: {path} is not an item of its ConfigMap")

    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if args and args[0] == "adapter":
        if "grpc" not in container.get("readinessProbe", {}):
            problems.append(f"{where}: an adapter's readiness is its gRPC health")
    if "metrics" in ports:
        for probe in ("livenessProbe",) + (() if args[0] == "adapter" else ("readinessProbe",)):
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != "/metrics" or get.get("port") not in ("metrics", ports["metrics"]):
                problems.append(f"{where}: {probe} is not httpGet /metrics on the metrics port")
    return args


def main():
    directory, version = pathlib.Path(sys.argv[1]), sys.argv[2]
    problems = []
    if not validator_refuses_a_bad_manifest(version):
        problems.append("kubernetes-validate accepted a Deployment with replicas: \"three\"")

    documents = load(directory)
    if not documents:
        problems.append(f"no manifests in {directory}")
    for name, document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            at = "/".join(str(part) for part in error.absolute_path)
            problems.append(f"{name}: {describe(document)}: {error.message} (at {at})")
        except Exception as error:  # SchemaNotFoundError (unknown kind), ...
            problems.append(f"{name}: {describe(document)}: {type(error).__name__} {error}")

    secrets, secret_problems = secret_files(documents)
    problems += secret_problems
    env = next(
        (d["data"] for _, d in documents
         if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "refbus-env"),
        {},
    )

    commands = []
    for name, document in documents:
        if document.get("kind") not in WORKLOADS:
            continue
        spec = document["spec"]["template"]["spec"]
        spec["_env"] = env
        spec["_claims"] = {c["metadata"]["name"] for c in document["spec"].get("volumeClaimTemplates", [])}
        pod_context = spec.get("securityContext", {})
        workload = f"{name}: {document['kind']} {document['metadata']['name']}"
        if pod_context.get("runAsNonRoot") is not True:
            problems.append(f"{workload}: runAsNonRoot is not true")
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{workload} container {container['name']}"
            args = check_container(where, container, spec, secrets, problems)
            if args is not None:
                commands.append({"where": where, "args": args})

    for problem in problems:
        print(problem, file=sys.stderr)
    print(json.dumps(commands))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
