"""manifests/ checked without a cluster: kustomize renders, golden file, schema, Pod Security, KFP wiring."""

from __future__ import annotations

import os
import re

import kubernetes_validate
import pytest
import yaml
from static_toolchain import (
    GOLDEN_DIR,
    KUBERNETES_VERSION,
    MANIFESTS,
    REPO,
    env_example_keys,
    kustomizations,
    pod_specs,
    render,
)

GOLDEN = GOLDEN_DIR / "manifests-kind.yaml"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Every kustomization rendered once: {"base": [...], "overlays/kind": [...]}."""
    workdir = tmp_path_factory.mktemp("kustomize")
    return {name: render(name, workdir) for name in kustomizations()}


@pytest.fixture(scope="module")
def kind(rendered):
    return rendered["overlays/kind"]


def find(objects, kind, name, namespace=None):
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name
            and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(hits) == 1, f"expected one {kind} {namespace}/{name}, found {len(hits)}"
    return hits[0]


def normalised(objects) -> str:
    """Stable text for the golden file: objects sorted, keys sorted, Secret values redacted
    (they are test-only values, and a golden file must not look like it holds credentials)."""
    def key(o):
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])

    out = []
    for obj in sorted(objects, key=key):
        if obj["kind"] == "Secret":
            obj = {**obj, "data": {k: "<redacted>" for k in obj.get("data", {})}}
        out.append(yaml.safe_dump(obj, sort_keys=True, default_flow_style=False))
    return "---\n".join(out)


def test_every_kustomization_renders(rendered):
    assert set(rendered) >= {"base", "overlays/kind", "overlays/kind-seaweedfs"}
    for name, objects in rendered.items():
        kinds = {o["kind"] for o in objects}
        assert {"Namespace", "StatefulSet", "Deployment", "ConfigMap", "Secret", "NetworkPolicy"} <= kinds, name
        # MinIO's buckets come from a Job; SeaweedFS's pod makes its own.
        assert ("Job" in kinds) == (name != "overlays/kind-seaweedfs"), name


def test_kind_render_matches_golden_file(kind):
    got = normalised(kind)
    if os.environ.get("LONGTAIL_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(got)
    assert GOLDEN.is_file(), f"no golden file {GOLDEN}; run with LONGTAIL_UPDATE_GOLDEN=1 once"
    assert got == GOLDEN.read_text(), (
        "the kind render differs from tests/golden/manifests-kind.yaml; if the change is intended, "
        "regenerate with LONGTAIL_UPDATE_GOLDEN=1 and review the diff")


def test_every_object_validates_against_the_pinned_kubernetes_schema(rendered):
    for name, objects in rendered.items():
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']}: {err.message} at {err.path}")


def test_no_image_uses_latest_or_an_implicit_tag(rendered):
    for objects in rendered.values():
        for _obj, spec in pod_specs(objects):
            for c in spec.get("initContainers", []) + spec["containers"]:
                image = c["image"]
                name_part = image.split("@")[0]
                assert re.search(r":[\w][\w.-]*$", name_part.rsplit("/", 1)[-1]), f"{image}: no tag"
                assert not name_part.endswith(":latest"), f"{image}: latest"


def test_every_workload_meets_pod_security_restricted(rendered):
    """runAsNonRoot, no privilege escalation, drop ALL, seccomp RuntimeDefault; plus requests and
    limits, a read-only root filesystem, no service-account token, probes on long-running pods."""
    for name, objects in rendered.items():
        for obj, spec in pod_specs(objects):
            where = f"{name}: {obj['kind']} {obj['metadata']['name']}"
            pod_sc = spec.get("securityContext", {})
            assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert spec.get("automountServiceAccountToken") is False, where
            assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
            for c in spec.get("initContainers", []) + spec["containers"]:
                sc = c.get("securityContext", {})
                cwhere = f"{where} container {c['name']}"
                assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, cwhere
                assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, cwhere
                assert sc.get("allowPrivilegeEscalation") is False, cwhere
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], cwhere
                assert not sc.get("capabilities", {}).get("add"), cwhere
                assert not sc.get("privileged"), cwhere
                assert sc.get("readOnlyRootFilesystem") is True, cwhere
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c.get("resources", {}).get(part, {})), f"{cwhere}: {part}"
                if obj["kind"] not in {"Job", "CronJob"}:
                    assert "livenessProbe" in c and "readinessProbe" in c, f"{cwhere}: probes"
            for vol in spec.get("volumes", []):
                assert "hostPath" not in vol, f"{where}: hostPath volume {vol['name']}"


def test_namespace_enforces_restricted_pod_security(kind):
    ns = find(kind, "Namespace", "longtail")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kfp_launcher_puts_the_pipeline_root_on_our_minio(kind):
    launcher = find(kind, "ConfigMap", "kfp-launcher")
    namespace = launcher["metadata"]["namespace"]
    root = launcher["data"]["defaultPipelineRoot"]
    assert root.startswith("s3://"), root
    bucket = root.removeprefix("s3://").split("/")[0]

    s3 = yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]
    service = find(kind, "Service", "minio", "longtail")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "s3")
    assert s3["endpoint"] == f"minio.longtail.svc:{port}"
    assert s3["disableSSL"] is True and s3["forcePathStyle"] is True
    ref = s3["credentials"]["secretRef"]
    assert s3["credentials"]["fromEnv"] is False
    secret = find(kind, "Secret", ref["secretName"], namespace)
    assert {ref["accessKeyKey"], ref["secretKeyKey"]} <= set(secret["data"])

    job = find(kind, "Job", "minio-buckets", "longtail")
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert bucket in env["BUCKETS"].split(), f"pipeline-root bucket {bucket} is never created"
    mlflow = find(kind, "Deployment", "mlflow", "longtail")["spec"]["template"]["spec"]["containers"][0]
    dest = mlflow["command"][mlflow["command"].index("--artifacts-destination") + 1]
    assert dest.removeprefix("s3://").strip("/") in env["BUCKETS"].split()


def test_step_config_and_secret_live_beside_kfp_launcher(kind):
    namespace = find(kind, "ConfigMap", "kfp-launcher")["metadata"]["namespace"]
    config = find(kind, "ConfigMap", "longtail-config", namespace)["data"]
    secret = find(kind, "Secret", "longtail-s3", namespace)["data"]
    assert config["MLFLOW_TRACKING_URI"] == "http://mlflow.longtail.svc:5000"
    assert config["S3_ENDPOINT_URL"] == "http://minio.longtail.svc:9000"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret)
    from longtail.pipelines import training

    assert training.CONFIG_MAP == "longtail-config" and training.S3_SECRET == "longtail-s3"
    assert set(training.CONFIG_MAP_ENV) == set(config), "a ConfigMap key no step receives is dead"
    assert set(training.S3_SECRET_ENV) <= set(secret)


def test_mlflow_allows_the_host_name_the_steps_use(kind):
    mlflow = find(kind, "Deployment", "mlflow", "longtail")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in mlflow["env"]}
    assert "mlflow.longtail.svc:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_credentials_come_only_from_uncommitted_env_files():
    kustomization = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    for gen in kustomization["secretGenerator"]:
        assert "literals" not in gen, f"secretGenerator {gen['name']} has literals"
        for env in gen["envs"]:
            assert (MANIFESTS / "base" / f"{env}.example").is_file(), f"{env}.example missing"
    for example in MANIFESTS.rglob("*.env.example"):
        for line in example.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert line.strip().endswith("="), f"{example.name}: value committed in {line!r}"
        assert env_example_keys(example)
    for source in MANIFESTS.rglob("*.yaml"):
        for doc in yaml.safe_load_all(source.read_text()):
            if doc and doc.get("kind") == "Secret" and doc.get("$patch") != "delete":  # a delete holds no data
                pytest.fail(f"{source.relative_to(REPO)}: Secret written in YAML; use the secretGenerator")


def test_kind_cluster_pins_its_node_image_by_digest():
    cluster = yaml.safe_load((MANIFESTS / "kind" / "cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster" and cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    for node in cluster["nodes"]:
        image = node["image"]
        assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", image), image
        minor = re.search(r":v(\d+\.\d+)", image).group(1)
        assert KUBERNETES_VERSION.startswith(minor + "."), (
            f"kind runs Kubernetes {minor} but manifests are validated against {KUBERNETES_VERSION}")


def policies(objects, namespace="longtail"):
    return {o["metadata"]["name"]: o["spec"] for o in objects
            if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == namespace}


def selects(policy_spec, pod_labels) -> bool:
    wanted = policy_spec["podSelector"].get("matchLabels", {})
    return all(pod_labels.get(k) == v for k, v in wanted.items())


def test_longtail_denies_all_traffic_but_the_flows_it_needs(kind):
    nps = policies(kind)
    assert nps["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    steps = {"namespaceSelector": {"matchLabels": {"longtail.kubeflow.org/steps": "true"}}}
    pod = {name: {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}
           for name in ("minio", "mlflow", "minio-buckets", "postgres")}
    tcp = [{"protocol": "TCP", "port": 9000}]
    pg = [{"protocol": "TCP", "port": 5432}]
    # Who may reach MinIO, MLflow and PostgreSQL, and where MLflow and the bucket Job may go: nothing else.
    assert nps["minio"]["ingress"] == [{"from": [steps, pod["mlflow"], pod["minio-buckets"]], "ports": tcp}]
    assert nps["minio"]["egress"] == []
    assert nps["mlflow"]["ingress"] == [{"from": [steps], "ports": [{"protocol": "TCP", "port": 5000}]}]
    assert nps["mlflow"]["egress"] == [{"to": [pod["minio"]], "ports": tcp}, {"to": [pod["postgres"]], "ports": pg}]
    assert nps["postgres"]["ingress"] == [{"from": [pod["mlflow"]], "ports": pg}]
    assert nps["postgres"]["egress"] == []
    assert nps["minio-buckets"]["egress"] == [{"to": [pod["minio"]], "ports": tcp}]
    assert nps["minio-buckets"]["ingress"] == []
    dns = nps["dns-egress"]["egress"][0]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    # Every workload in longtail is selected by a policy of its own, beyond the default deny.
    for obj, _ in pod_specs(kind):
        if obj["metadata"]["namespace"] == "longtail":
            labels = obj["spec"]["template"]["metadata"]["labels"]
            own = [n for n, spec in nps.items() if spec["podSelector"] and selects(spec, labels)]
            assert own, f"{obj['kind']} {obj['metadata']['name']} has no NetworkPolicy of its own"
    # The policies' ports are the Services' ports.
    assert [p["port"] for p in find(kind, "Service", "minio", "longtail")["spec"]["ports"]] == [9000]
    assert [p["port"] for p in find(kind, "Service", "mlflow", "longtail")["spec"]["ports"]] == [5000]
    assert [p["port"] for p in find(kind, "Service", "postgres", "longtail")["spec"]["ports"]] == [5432]


def test_the_step_namespace_is_labelled_for_the_policies_and_pod_security(kind):
    labels = find(kind, "Namespace", "kubeflow")["metadata"]["labels"]
    assert labels["longtail.kubeflow.org/steps"] == "true"
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    namespace = find(kind, "ConfigMap", "kfp-launcher")["metadata"]["namespace"]
    assert namespace == "kubeflow"


def test_minio_console_is_not_exposed(kind):
    minio = find(kind, "StatefulSet", "minio", "longtail")["spec"]["template"]["spec"]["containers"][0]
    assert "--console-address" not in minio["args"]
    assert [p["containerPort"] for p in minio["ports"]] == [9000]
    assert {"name": "MINIO_BROWSER", "value": "off"} in minio["env"]


def test_mlflow_requires_basic_auth_with_credentials_from_secrets(kind):
    mlflow = find(kind, "Deployment", "mlflow", "longtail")["spec"]["template"]["spec"]["containers"][0]
    command = mlflow["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    env = {e["name"]: e for e in mlflow["env"]}
    for name, secret in (("MLFLOW_AUTH_ADMIN_USERNAME", "longtail-mlflow"), ("MLFLOW_AUTH_ADMIN_PASSWORD", "longtail-mlflow"),
                         ("MLFLOW_FLASK_SERVER_SECRET_KEY", "mlflow-server")):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret and ref["key"] in find(kind, "Secret", secret, "longtail")["data"]
    ini = find(kind, "ConfigMap", "mlflow-auth", "longtail")["data"]["basic_auth.ini"]
    assert "database_uri = postgresql+psycopg://mlflow@postgres.longtail.svc:5432/mlflow_auth" in ini
    assert "admin_password" not in ini
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow-auth/basic_auth.ini"
    # The steps log in with the same user, from the Secret beside kfp-launcher.
    steps = find(kind, "Secret", "longtail-mlflow", "kubeflow")["data"]
    assert set(steps) == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    from longtail.pipelines import training

    assert training.MLFLOW_SECRET == "longtail-mlflow" and set(training.MLFLOW_SECRET_ENV) == set(steps)


def test_every_image_is_pinned_by_digest_or_listed_with_its_reason(rendered):
    listed = {}
    for line in (MANIFESTS / "IMAGES.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            listed[cells[0].strip("`")] = cells
    for objects in rendered.values():
        for _obj, spec in pod_specs(objects):
            for c in spec.get("initContainers", []) + spec["containers"]:
                if "@sha256:" in c["image"]:
                    continue
                assert c["image"] in listed, f"{c['image']}: neither pinned by digest nor listed in manifests/IMAGES.md"
                _, _, pinned, reason = listed[c["image"]]
                assert pinned == "tag only" and len(reason) > 40, f"{c['image']}: no reason given"


def test_the_seaweedfs_overlay_answers_where_minio_did(rendered):
    objects = rendered["overlays/kind-seaweedfs"]
    assert not [o for o in objects if "minio" in o["metadata"]["name"] and o["kind"] != "Service"]
    service = find(objects, "Service", "minio", "longtail")["spec"]
    assert service["selector"] == {"app.kubernetes.io/name": "seaweedfs"}
    assert service["ports"] == [{"name": "s3", "port": 9000, "targetPort": "s3"}]
    pod = find(objects, "StatefulSet", "seaweedfs", "longtail")["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "s3"] == [8333]
    hook = container["lifecycle"]["postStart"]["exec"]["command"][-1]
    buckets = {e["name"]: e.get("value") for e in container["env"]}["BUCKETS"].split()
    root = find(objects, "ConfigMap", "kfp-launcher")["data"]["defaultPipelineRoot"]
    mlflow = find(objects, "Deployment", "mlflow", "longtail")["spec"]["template"]["spec"]["containers"][0]
    dest = mlflow["command"][mlflow["command"].index("--artifacts-destination") + 1]
    assert {root.removeprefix("s3://").split("/")[0], dest.removeprefix("s3://").strip("/"), "longtail-data"} <= set(buckets)
    assert "s3.bucket.create" in hook and "s3.configure -user longtail" in hook
    nps = policies(objects)
    assert "minio" not in nps and nps["seaweedfs"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8333}]
    assert selects(nps["seaweedfs"], pod["metadata"]["labels"])
    assert nps["mlflow"]["egress"] == [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "seaweedfs"}}}],
                                        "ports": [{"protocol": "TCP", "port": 8333}]},
                                       {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}}}],
                                        "ports": [{"protocol": "TCP", "port": 5432}]}]


def test_mlflow_keeps_its_store_in_postgres_reached_through_secrets(kind):
    """No volume of MLflow's own: the store URI from the Secret mlflow-store, the basic-auth database's
    password from the Secret postgres (which PostgreSQL reads as a file), several workers."""
    spec = find(kind, "Deployment", "mlflow", "longtail")["spec"]
    pod = spec["template"]["spec"]
    mlflow = pod["containers"][0]
    assert "--backend-store-uri" not in mlflow["command"]
    assert int(mlflow["command"][mlflow["command"].index("--workers") + 1]) > 1
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert "strategy" not in spec, "Recreate was for SQLite on one volume"
    assert not [o for o in kind if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == "mlflow-db"]
    env = {e["name"]: e for e in mlflow["env"]}
    for name, secret, key in (("MLFLOW_BACKEND_STORE_URI", "mlflow-store", "MLFLOW_BACKEND_STORE_URI"),
                              ("PGPASSWORD", "postgres", "POSTGRES_PASSWORD")):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (secret, key)
        assert key in find(kind, "Secret", secret, "longtail")["data"]
    postgres = find(kind, "StatefulSet", "postgres", "longtail")["spec"]
    container = postgres["template"]["spec"]["containers"][0]
    pg_env = {e["name"]: e.get("value") for e in container["env"]}
    assert pg_env["POSTGRES_USER"] == "mlflow" and pg_env["POSTGRES_DB"] == "mlflow"
    assert "POSTGRES_PASSWORD" not in pg_env, "the password is read as a file, not from the environment"
    secret_volume = next(v for v in postgres["template"]["spec"]["volumes"] if "secret" in v)
    assert secret_volume["secret"]["secretName"] == "postgres"
    mount = next(m for m in container["volumeMounts"] if m["name"] == secret_volume["name"])
    assert pg_env["POSTGRES_PASSWORD_FILE"] == f"{mount['mountPath']}/POSTGRES_PASSWORD"
    assert pg_env["PGDATA"].startswith(next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data") + "/")
    assert [t["metadata"]["name"] for t in postgres["volumeClaimTemplates"]] == ["data"]
    init = find(kind, "ConfigMap", "postgres-init", "longtail")["data"]
    assert "CREATE DATABASE mlflow_auth;" in "".join(init.values())
