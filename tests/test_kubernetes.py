"""deploy/kubernetes/: every object valid for Kubernetes 1.31 (kubernetes-validate's bundled
schemas, offline), KEDA's objects against the part of KEDA's schema they use, and every name
one object gives another defined; the processes are docker-compose's, with the same image,
commands and settings."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31"
NAMESPACE = "scheduler"
IMAGE = "registry.example.org/trial-visit-scheduler:1.0.0"

Obj = dict[str, Any]


def render() -> list[Obj]:
    """The subset of `kustomize build` that kustomization.yaml uses: resources, namespace,
    images."""
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert set(kustomization) == {"apiVersion", "kind", "namespace", "resources", "images"}
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    objects = []
    for name in kustomization["resources"]:
        for obj in yaml.safe_load_all((KUBE / name).read_text()):
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = kustomization["namespace"]
            for pod in _pod_specs(obj):
                for container in pod.get("initContainers", []) + pod["containers"]:
                    container["image"] = images.get(container["image"], container["image"])
            objects.append(obj)
    return objects


def _pod_specs(obj: Obj) -> list[Obj]:
    kind = obj["kind"]
    if kind in {"Deployment", "StatefulSet", "Job"}:
        return [obj["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


OBJECTS = render()


def by_kind(kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in OBJECTS if o["kind"] == kind}


def containers(obj: Obj) -> list[Obj]:
    return [c for pod in _pod_specs(obj) for c in pod.get("initContainers", []) + pod["containers"]]


def app_containers() -> list[Obj]:
    return [
        c
        for o in OBJECTS
        for c in containers(o)
        if c["image"] == IMAGE  # the scheduler's own image, not postgres for the backup
    ]


def test_rendered_objects():
    names = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in OBJECTS)
    assert names == [
        "ConfigMap/scheduler-backup-script",
        "ConfigMap/scheduler-config",
        "CronJob/scheduler-backup",
        "Deployment/scheduler-web",
        "HorizontalPodAutoscaler/scheduler-web",
        "Ingress/scheduler-web",
        "Job/scheduler-migrate",
        "Namespace/scheduler",
        "NetworkPolicy/deny-all-ingress",
        "NetworkPolicy/scheduler-web-from-ingress",
        "PersistentVolumeClaim/scheduler-backups",
        "PodDisruptionBudget/scheduler-web",
        "ScaledObject/scheduler-invite-worker",
        "ScaledObject/scheduler-webhook-worker",
        "ScaledObject/scheduler-worker",
        "Service/scheduler-beat",
        "Service/scheduler-invite-worker",
        "Service/scheduler-web",
        "Service/scheduler-webhook-worker",
        "Service/scheduler-worker",
        "StatefulSet/scheduler-beat",
        "StatefulSet/scheduler-invite-worker",
        "StatefulSet/scheduler-webhook-worker",
        "StatefulSet/scheduler-worker",
        "TriggerAuthentication/scheduler-redis",
    ]
    assert {o["metadata"].get("namespace") for o in OBJECTS if o["kind"] != "Namespace"} == {
        NAMESPACE
    }


def _core(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if not o["apiVersion"].startswith("keda.sh/")]


@pytest.mark.parametrize(
    "obj",
    _core(OBJECTS) + list(yaml.safe_load_all((KUBE / "secret.example.yaml").read_text())),
    ids=lambda o: f"{o['kind']}/{o['metadata']['name']}",
)
def test_valid_for_kubernetes(obj):
    # strict: the schemas refuse any field Kubernetes does not know (a typo is an error).
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_invalid_object_is_refused():
    deployment = dict(by_kind("Deployment")["scheduler-web"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_keda_is_not_in_the_core_schemas():
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(
            by_kind("ScaledObject")["scheduler-worker"], KUBERNETES_VERSION, strict=True
        )


# The part of KEDA 2.x's CRDs (keda.sh/v1alpha1) these manifests use, fields as KEDA names
# them; anything else is refused so a misspelt field fails here, not silently in the cluster.
_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
    "additionalProperties": False,
}
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                    },
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            # KEDA's trigger metadata is a map of strings.
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "additionalProperties": False,
                                "properties": {"name": {"type": "string"}},
                            },
                        },
                    },
                },
            },
        },
    },
}
TRIGGER_AUTHENTICATION = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "additionalProperties": False,
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                    },
                }
            },
        },
    },
}


def test_keda_objects_match_kedas_schema():
    for obj in by_kind("ScaledObject").values():
        jsonschema.validate(obj, SCALED_OBJECT)
    for obj in by_kind("TriggerAuthentication").values():
        jsonschema.validate(obj, TRIGGER_AUTHENTICATION)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**by_kind("ScaledObject")["scheduler-worker"], "spec": {}}, SCALED_OBJECT
        )


def _queues(command: list[str]) -> set[str]:
    return (
        set(command[command.index("--queues") + 1].split(",")) if "--queues" in command else set()
    )


def test_workers_scale_on_the_queues_settings_route_to():
    from django.conf import settings

    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    # "celery" is Celery's default queue: any task without a route.
    queues = routed | set(settings.OUTBOX_QUEUES.values()) | {"celery"}
    assert queues == {"control", "celery", "reminders", "invites", "webhooks"}
    consumed = {
        name: _queues(sts["spec"]["template"]["spec"]["containers"][0]["command"])
        for name, sts in by_kind("StatefulSet").items()
        if name != "scheduler-beat"
    }
    assert consumed == {
        "scheduler-worker": {"control", "celery", "reminders"},
        "scheduler-invite-worker": {"invites"},
        "scheduler-webhook-worker": {"webhooks"},
    }
    # Every queue is consumed by exactly one kind of worker.
    assert sorted(q for names in consumed.values() for q in names) == sorted(queues)
    scaled = {
        so["spec"]["scaleTargetRef"]["name"]: {
            t["metadata"]["listName"] for t in so["spec"]["triggers"]
        }
        for so in by_kind("ScaledObject").values()
    }
    # Each worker scales on the depth of the queues it consumes (control carries a few
    # periodic tasks a minute: never a reason for another pod).
    assert scaled == {name: names - {"control"} for name, names in consumed.items()}
    for so in by_kind("ScaledObject").values():
        target = so["spec"]["scaleTargetRef"]
        assert (target["kind"], target["apiVersion"]) == ("StatefulSet", "apps/v1")
        assert so["spec"]["minReplicaCount"] == 1  # ordinal 0, and the control queue, always
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "redis"
            assert trigger["metadata"]["databaseIndex"] == "0"
            assert trigger["authenticationRef"]["name"] in by_kind("TriggerAuthentication")


def test_cross_references_resolve():
    config_maps = by_kind("ConfigMap")
    claims = by_kind("PersistentVolumeClaim")
    secret_keys = {
        s["metadata"]["name"]: set(s["stringData"])
        for s in yaml.safe_load_all((KUBE / "secret.example.yaml").read_text())
    }
    for obj in OBJECTS:
        for pod in _pod_specs(obj):
            volumes = {v["name"]: v for v in pod["volumes"]}
            templates = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
            for volume in volumes.values():
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in secret_keys
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in config_maps
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims
            for container in pod.get("initContainers", []) + pod["containers"]:
                for mount in container["volumeMounts"]:
                    assert mount["name"] in volumes or mount["name"] in templates, mount
                for source in container.get("envFrom", []):
                    assert source["configMapRef"]["name"] in config_maps
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("configMapKeyRef")
                    if ref:
                        assert ref["key"] in config_maps[ref["name"]]["data"], var
                    # Every *_FILE names a key of the mounted Secret.
                    if var["name"].endswith("_FILE"):
                        mount = next(
                            m
                            for m in container["volumeMounts"]
                            if var["value"].startswith(m["mountPath"] + "/")
                        )
                        secret = volumes[mount["name"]]["secret"]["secretName"]
                        assert var["value"].rsplit("/", 1)[1] in secret_keys[secret], var
        if obj["kind"] == "StatefulSet":
            assert obj["spec"]["serviceName"] in by_kind("Service")
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            selector = obj["spec"]["selector"]["matchLabels"]
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items()
    workloads = [o for o in OBJECTS if o["kind"] in {"Deployment", "StatefulSet"}]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for obj in by_kind(kind).values():
            selector = obj["spec"].get("selector") or obj["spec"]["podSelector"]
            selector = selector.get("matchLabels", selector)
            if not selector:
                continue  # the namespace-wide deny
            matched = [
                w["metadata"]["name"]
                for w in workloads
                if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
            ]
            assert len(matched) == 1, (kind, obj["metadata"]["name"], matched)
    for scaled in list(by_kind("HorizontalPodAutoscaler").values()) + list(
        by_kind("ScaledObject").values()
    ):
        target = scaled["spec"]["scaleTargetRef"]
        assert target["name"] in by_kind(target["kind"])
    backend = by_kind("Ingress")["scheduler-web"]["spec"]["rules"][0]["http"]["paths"][0]
    service = by_kind("Service")[backend["backend"]["service"]["name"]]
    assert backend["backend"]["service"]["port"]["name"] in {
        p["name"] for p in service["spec"]["ports"]
    }
    for auth in by_kind("TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secret_keys[ref["name"]]


COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _environment(container: Obj) -> dict[str, str]:
    env = dict(config_maps_data()) if container.get("envFrom") else {}
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("configMapKeyRef")
        env[var["name"]] = (
            by_kind("ConfigMap")[ref["name"]]["data"][ref["key"]] if ref else var["value"]
        )
    return env


def config_maps_data() -> dict[str, str]:
    return by_kind("ConfigMap")["scheduler-config"]["data"]


def _workloads() -> dict[str, Obj]:
    return {
        name: obj
        for kind in ("Deployment", "StatefulSet", "Job")
        for name, obj in by_kind(kind).items()
    }


def _compose_service(workload: str) -> Obj:
    return COMPOSE["services"][workload.removeprefix("scheduler-")]


def _user(url: str) -> str:
    return urlsplit(url).username or ""


def test_every_process_gets_composes_settings():
    """Every variable docker-compose gives a process is set here too, a secret through the
    same *_FILE variable, the database as the same role; TRUST_PROXY_HEADERS and the static
    manifest as compose has them."""
    app_services = {
        name
        for name, service in COMPOSE["services"].items()
        if service.get("image") == COMPOSE["x-app"]["image"]
    }
    assert {f"scheduler-{name}" for name in app_services} == set(_workloads())
    for name, workload in _workloads().items():
        compose_env = _compose_service(name)["environment"]
        for container in containers(workload):
            env = _environment(container)
            # REDIS_URL is a file here: a managed Redis's URL carries its password.
            missing = [key for key in compose_env if key not in env and f"{key}_FILE" not in env]
            assert missing == [], (name, container["name"], missing)
            if container["name"] != "wait-for-migrations":
                assert _user(env["DATABASE_URL"]) == _user(compose_env["DATABASE_URL"]), name
            for key, value in env.items():
                if key.endswith("_FILE"):
                    assert key.removesuffix("_FILE") not in env, key
                    assert value.startswith("/run/secrets/scheduler/")
            assert env["TRUST_PROXY_HEADERS"] == "true"
            assert env["STATIC_MANIFEST"] == "true"
            assert env["VAR_DIR"] == "/var/lib/scheduler"
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert env["VAR_DIR"] in mounts  # read-only root: VAR_DIR is a volume
            owner = "database-owner-password" in env["DATABASE_PASSWORD_FILE"]
            assert owner == (name == "scheduler-migrate"), name
    data = config_maps_data()
    database = (
        f"@{data['PGHOST']}:{data['PGPORT']}/{data['PGDATABASE']}?sslmode={data['PGSSLMODE']}"
    )
    assert data["DATABASE_URL"] == f"postgres://scheduler_app{database}"
    assert data["DATABASE_OWNER_URL"] == f"postgres://{data['PGUSER']}{database}"
    assert data["PGUSER"] == COMPOSE["services"]["backup"]["environment"]["PGUSER"]
    backup_env = {
        v["name"]: v.get("value")
        for v in containers(by_kind("CronJob")["scheduler-backup"])[0]["env"]
    }
    assert backup_env["PGPASSWORD_FILE"] == "/run/secrets/scheduler/database-owner-password"


def test_commands_and_image_match_compose_and_the_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--uid 10001" in dockerfile and "VAR_DIR=/var/lib/scheduler" in dockerfile
    assert COMPOSE["x-app"]["image"].split(":")[0] == "trial-visit-scheduler"
    assert {c["image"] for c in app_containers()} == {IMAGE}
    commands = {
        name: w["spec"]["template"]["spec"]["containers"][0]["command"]
        for name, w in _workloads().items()
    }
    assert commands == {name: _compose_service(name)["command"] for name in _workloads()}
    backup = by_kind("CronJob")["scheduler-backup"]
    assert containers(backup)[0]["image"] == COMPOSE["services"]["backup"]["image"]
    script = by_kind("ConfigMap")["scheduler-backup-script"]["data"]["backup.sh"]
    assert script == (ROOT / "deploy" / "backup.sh").read_text()


def test_pods_run_unprivileged_with_a_read_only_root():
    for obj in OBJECTS:
        for pod in _pod_specs(obj):
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["automountServiceAccountToken"] is False
            for container in pod.get("initContainers", []) + pod["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"] == {"drop": ["ALL"]}
                assert "memory" in container["resources"]["limits"]
    app_pods = [p for o in OBJECTS for p in _pod_specs(o) if p["containers"][0]["image"] == IMAGE]
    assert {p["securityContext"]["runAsUser"] for p in app_pods} == {10001}


def test_exactly_one_beat_and_a_journal_per_worker():
    beat = by_kind("StatefulSet")["scheduler-beat"]
    assert beat["spec"]["replicas"] == 1
    assert not any(
        "beat" in c["command"] for d in by_kind("Deployment").values() for c in containers(d)
    )
    assert "scheduler-beat" not in {
        s["spec"]["scaleTargetRef"]["name"] for s in by_kind("ScaledObject").values()
    }
    for name in ("scheduler-worker", "scheduler-invite-worker", "scheduler-webhook-worker"):
        sts = by_kind("StatefulSet")[name]
        assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == [
            "outbox-journal"
        ]
        worker = sts["spec"]["template"]["spec"]["containers"][0]
        journal = next(m for m in worker["volumeMounts"] if m["name"] == "outbox-journal")
        assert journal["mountPath"] == _environment(worker)["REMINDER_OUTCOME_JOURNAL_DIR"]


def test_web_probes_autoscaling_and_exposure():
    web = by_kind("Deployment")["scheduler-web"]
    container = web["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/livez"
    assert "replicas" not in web["spec"]  # the autoscaler owns it
    hpa = by_kind("HorizontalPodAutoscaler")["scheduler-web"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert by_kind("PodDisruptionBudget")["scheduler-web"]["spec"]["minAvailable"] == 1
    ingress = by_kind("Ingress")["scheduler-web"]
    assert ingress["spec"]["tls"][0]["hosts"] == [config_maps_data()["ALLOWED_HOSTS"]]
    allowed = by_kind("NetworkPolicy")["scheduler-web-from-ingress"]
    assert allowed["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert by_kind("NetworkPolicy")["deny-all-ingress"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }


def test_a_stopping_web_pod_finishes_its_requests_before_it_is_killed():
    """The Ingress may still send a stopping pod requests for a few seconds: the pod waits
    before gunicorn stops listening, then gunicorn lets running requests finish for its
    graceful_timeout, all within the grace period before the kubelet kills it."""
    pod = by_kind("Deployment")["scheduler-web"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert int(pre_stop[1]) >= 5
    graceful = runpy.run_path(str(ROOT / "config" / "gunicorn.py"))["graceful_timeout"]
    assert graceful == 30
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + graceful


def _gunicorn_threads_per_container() -> int:
    """Processes times threads, as config/gunicorn.py sets them from this environment."""
    settings = runpy.run_path(str(ROOT / "config" / "gunicorn.py"))
    return int(settings["workers"] * settings["threads"])


def _celery_processes(command: list[str]) -> int:
    """A prefork worker's pool processes and their parent."""
    return int(command[command.index("--concurrency") + 1]) + 1


def database_connections_at_full_scale() -> dict[str, int]:
    """The most database connections each workload holds at once, with every autoscaler at its
    maximum: a web pod one per gunicorn thread, a worker pod one per Celery process, beat, the
    migration Job and the backup one each."""
    config = by_kind("ConfigMap")["scheduler-config"]["data"]
    assert not {"WEB_CONCURRENCY", "WEB_THREADS"} & set(config)
    hpa = by_kind("HorizontalPodAutoscaler")["scheduler-web"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "scheduler-web"
    budget = {"scheduler-web": hpa["maxReplicas"] * _gunicorn_threads_per_container()}
    keda = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"]["maxReplicaCount"]
        for o in OBJECTS
        if o["kind"] == "ScaledObject"
    }
    for name, workload in by_kind("StatefulSet").items():
        command = workload["spec"]["template"]["spec"]["containers"][0]["command"]
        if "beat" in command:
            assert workload["spec"]["replicas"] == 1
            budget[name] = 1
        else:
            budget[name] = keda[name] * _celery_processes(command)
    budget.update({name: 1 for kind in ("Job", "CronJob") for name in by_kind(kind)})
    return budget


def test_the_readme_says_how_many_database_connections_a_full_scale_out_holds(monkeypatch):
    # Neither the ConfigMap nor compose sets them (checked below): gunicorn's defaults apply.
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("WEB_THREADS", raising=False)
    budget = database_connections_at_full_scale()
    assert budget == {
        "scheduler-web": 10 * 2 * 4,
        "scheduler-worker": 6 * 3,
        "scheduler-invite-worker": 6 * 3,
        "scheduler-webhook-worker": 6 * 5,
        "scheduler-beat": 1,
        "scheduler-migrate": 1,
        "scheduler-backup": 1,
    }
    # docker-compose: one container of each.
    assert not {"WEB_CONCURRENCY", "WEB_THREADS"} & set(COMPOSE["x-app"]["environment"])
    compose = {"web": _gunicorn_threads_per_container(), "beat": 1, "migrate": 1, "backup": 1}
    for name in ("worker", "invite-worker", "webhook-worker"):
        compose[name] = _celery_processes(COMPOSE["services"][name]["command"])
    assert compose == {
        "web": 8,
        "worker": 3,
        "invite-worker": 3,
        "webhook-worker": 5,
        "beat": 1,
        "migrate": 1,
        "backup": 1,
    }

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"at most **{sum(budget.values())} database connections**" in readme
    assert f"web pods {budget['scheduler-web']}" in readme
    assert f"Compose holds at most {sum(compose.values())} (web {compose['web']}," in readme
