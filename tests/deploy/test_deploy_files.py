"""deploy/: what can be checked without a Docker engine or a cluster.

Every YAML and JSON file parses; the compose file builds Dockerfile targets and runs real CLI flags;
the Kubernetes objects fit together (names, labels, probes); the Prometheus rules and the Grafana
dashboard only use metrics the detector exports.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.stream.clients import consumer_config, transactional_id
from detector.stream.metrics import WorkerMetrics
from detector.stream.settings import RunSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def exported_metrics() -> dict[str, str]:
    """Each metric the detector exports (its family name) -> its type, read from the worker's own registry."""
    return {family.name: family.type for family in WorkerMetrics().registry.collect()}


_EXPORTED = exported_metrics()


def _of_type(kind: str) -> set[str]:
    return {name for name, type_ in _EXPORTED.items() if type_ == kind}


COUNTERS = {f"{name}_total" for name in _of_type("counter")}
HISTOGRAMS = _of_type("histogram")
GAUGES = _of_type("gauge")
SERIES = COUNTERS | GAUGES | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
METRIC = re.compile(r"flowwarden_[a-z_]+")

# CLI flags (docs/architecture.md contracts; flags may grow, add them here when they do).
RUN_FLAGS = {
    "--bootstrap-servers",
    "--input-topic",
    "--output-topic",
    "--dlq-topic",
    "--group-id",
    "--bundle",
    "--guarantee",
    "--max-batch",
    "--max-delay-ms",
    "--device",
    "--emit",
    "--metrics-port",
    "--alert-format",
    "--meter-timezone",
    "--min-confidence",
    "--log-format",
    "--instance-id",
}
REPLAY_FLAGS = {"--bootstrap-servers", "--topic", "--rate", "--speedup", "--limit", "--with-labels"}
FIT_FLAGS = {
    "--data",
    "--out",
    "--config",
    "--profile",
    "--registry",
    "--device",
    "--seed",
    "--epochs",
    "--split",
    "--label-map",
    "--quiet",
}
CHOICES = {
    "--guarantee": {"exactly-once", "at-least-once"},
    "--emit": {"attacks", "flagged", "novel", "all"},
    "--device": {"auto", "cpu", "cuda"},
    "--alert-format": {"native", "ecs", "ocsf"},
    "--log-format": {"auto", "console", "json"},
}
ENV_FROM_FLAGS = {"FLOWWARDEN_" + flag[2:].upper().replace("-", "_") for flag in RUN_FLAGS}
NOT_FLAGS = {"OMP_NUM_THREADS", "FLOWWARDEN_SECRETS_DIR"}  # torch's threads; the secrets directory's variable


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "compose.yaml")[0]


def detector_slots() -> dict[str, dict[str, Any]]:
    """The compose services that run a worker, one stable slot each (``detector-0``, ``detector-1``, ...)."""
    return {name: svc for name, svc in compose()["services"].items() if re.fullmatch(r"detector-\d+", name)}


def k8s_objects() -> dict[str, dict[str, Any]]:
    """kind -> object, for the resources kustomization.yaml applies plus the Secret template."""
    kustomization = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")[0]
    objects: dict[str, dict[str, Any]] = {}
    for name in [*kustomization["resources"], "secret-kafka-sasl.example.yaml"]:
        for doc in load_yaml(DEPLOY / "k8s" / name):
            objects[doc["kind"]] = doc
    return objects


def flags(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]


def option_values(argv: list[str]) -> dict[str, str]:
    return {arg: argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg.startswith("--")}


# --- every file parses -----------------------------------------------------------------------------


def test_deploy_has_the_expected_files() -> None:
    for name in [
        "Dockerfile",
        "compose.yaml",
        "README.md",
        "k8s/kustomization.yaml",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "grafana/dashboards/flowwarden.json",
    ]:
        assert (DEPLOY / name).is_file(), name
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert load_yaml(path), f"{path} holds no YAML document"


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.json")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path: Path) -> None:
    assert json.loads(path.read_text(encoding="utf-8"))


# --- Dockerfile ------------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined, comments dropped), in file order."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text(encoding="utf-8"))
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1), [])
        if current is not None:
            current.append(line)
    return stages


def test_dockerfile_stages() -> None:
    stages = dockerfile_stages()
    assert {"detector", "trainer"} <= set(stages)
    assert list(stages)[-1] == "detector", "the detector must be the default (last) target"


def test_detector_image() -> None:
    stage = dockerfile_stages()["detector"]
    assert 'ENTRYPOINT ["detector"]' in stage
    assert 'CMD ["run"]' in stage
    user = [line for line in stage if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in {"root", "0"}
    healthcheck = " ".join(line for line in stage if line.startswith("HEALTHCHECK"))
    assert "/healthz" in healthcheck and "9108" in healthcheck
    assert "EXPOSE 9108" in stage
    stages = dockerfile_stages()
    parent = stage[0].split()[1]
    assert parent == "base" and stages["base"][0].startswith("FROM ${PYTHON_IMAGE} ")


def test_detector_image_has_cpu_torch_and_no_training_extra() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    stages = dockerfile_stages()
    copies = [line for line in stages["detector"] if line.startswith("COPY --from=")]
    sources = {re.match(r"COPY --from=(\S+)", line).group(1) for line in copies}
    for name in sources | {"detector"}:
        joined = "\n".join(stages[name])
        assert not re.search(r"\.\[[^]]*\b(train|tools)\b", joined), f"stage {name} installs the train or tools extra"
        copied = [line.split()[1:-1] for line in stages[name] if line.startswith("COPY ") and "--from" not in line]
        assert not any(src.startswith(("trainer", "detector/tools")) for srcs in copied for src in srcs), name
    assert any('"torch==${TORCH_VERSION}"' in line and "--index-url" in line for line in stages["build"])
    # --backend auto's CPU choice (openvino-bf16) needs the openvino extra in the worker image
    assert any(re.search(r"\.\[[^]]*\bopenvino\b", line) for line in stages["build"])
    assert any(re.search(r"\.\[[^]]*\btrain\b", line) for line in stages["trainer-build"])


def test_dockerfile_copies_files_that_exist() -> None:
    for stage in dockerfile_stages().values():
        for line in stage:
            if not line.startswith("COPY ") or line.startswith("COPY --from="):
                continue
            *sources, _ = shlex.split(line)[1:]
            for source in sources:
                if "*" in source:  # a pattern may match nothing (Docker copies what matches)
                    continue
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in [".venv", "runs", "data", ".git", ".pytest_cache", "**/__pycache__"]:
        assert entry in ignored
    for needed in ["detector", "trainer", "pyproject.toml", "constraints.txt", "README.md"]:
        assert needed not in ignored


# --- compose ---------------------------------------------------------------------------------------


def test_compose_builds_dockerfile_targets() -> None:
    stages = dockerfile_stages()
    services = compose()["services"]
    built = {name: svc for name, svc in services.items() if "build" in svc}
    assert set(built) == {*detector_slots(), "trainer"}
    for name, svc in built.items():
        context = (DEPLOY / svc["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert svc["build"]["target"] == name.partition("-")[0] and svc["build"]["target"] in stages
    images = {svc["image"] for svc in detector_slots().values()}
    assert images == {services["replay"]["image"]}, "every slot and replay run the one detector image"


def test_compose_kafka_is_kraft_with_topics() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.4.0"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1, "exactly-once needs it on one broker"
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:9092" in advertised and "localhost:9094" in advertised

    init = " ".join(services["kafka-init"]["command"])
    assert re.search(r"--topic flows --partitions 6\b", init)
    for detector in detector_slots().values():
        options = option_values(detector["command"])
        for topic in (options["--input-topic"], options["--output-topic"], options["--dlq-topic"]):
            assert f"--topic {topic} " in init, f"topic {topic} is not created by kafka-init"
        assert detector["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_compose_detector_services() -> None:
    slots = detector_slots()
    assert list(slots) == ["detector-0", "detector-1"]
    for detector in slots.values():
        argv = detector["command"]
        assert argv[0] == "run"
        assert set(flags(argv)) <= RUN_FLAGS
        for option, value in option_values(argv).items():
            if option in CHOICES:
                assert value in CHOICES[option], (option, value)
        assert option_values(argv)["--bundle"] == "/registry"
        assert "./registry:/registry:ro" in detector["volumes"]
        assert "deploy" not in detector, "one service per slot: a replicated service has no stable names"
        assert option_values(argv)["--guarantee"] == "exactly-once"
        assert set(detector["environment"]) - NOT_FLAGS <= ENV_FROM_FLAGS
        assert detector["environment"]["FLOWWARDEN_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert len({tuple(detector["command"]) for detector in slots.values()}) == 1, "slots differ only in their name"


def test_each_compose_slot_is_a_static_member_with_its_own_transactional_id(monkeypatch, tmp_path) -> None:
    """A worker restarted in its slot takes its own partitions back and fences its predecessor's transaction."""
    members, transactions = set(), set()
    for name, detector in detector_slots().items():
        assert detector["environment"]["FLOWWARDEN_INSTANCE_ID"] == name
        for key, value in detector["environment"].items():
            monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)))
        given = {flag[2:].replace("-", "_"): value for flag, value in option_values(detector["command"]).items()}
        settings = load_settings(RunSettings, {**given, "bundle": str(tmp_path)})  # the container's /registry
        members.add(consumer_config(settings)["group.instance.id"])
        transactions.add(transactional_id(settings))
    assert members == set(detector_slots())
    assert transactions == {f"flowwarden-detector-{name}" for name in detector_slots()}


def test_compose_trainer_and_replay_commands() -> None:
    services = compose()["services"]
    fit = services["trainer"]["command"]
    assert fit[0] == "fit" and set(flags(fit)) <= FIT_FLAGS
    assert option_values(fit)["--registry"] == "/registry"
    assert "train" in services["trainer"]["profiles"]
    replay = services["replay"]["command"]
    assert replay[0] == "replay" and set(flags(replay)) <= REPLAY_FLAGS


def test_compose_trainer_flags_exist_in_the_trainer_cli() -> None:
    """Cross-check against the real parser."""
    from trainer.cli import build_parser

    parser = build_parser()
    argv = [str(arg) for arg in compose()["services"]["trainer"]["command"]]
    argv = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", a) for a in argv]  # compose's ${VAR:-default}
    parser.parse_args(argv)


def _subcommand_options(parser: Any, command: str) -> set[str] | None:
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and command in choices:
            return set(choices[command]._option_string_actions)
    return None


@pytest.mark.parametrize("service", ["detector-0", "detector-1", "replay"])
def test_compose_detector_flags_exist_in_the_detector_cli(service: str) -> None:
    """Cross-check against the real parser of ``detector run`` / ``detector replay``."""
    from detector.cli import build_parser

    argv = compose()["services"][service]["command"]
    options = _subcommand_options(build_parser(), argv[0])
    assert options is not None, f"`detector {argv[0]}` is not a detector command"
    assert set(flags(argv)) <= options
    if argv[0] == "run":  # the settings deploy/ passes as FLOWWARDEN_* must be options of `detector run`
        env = set(compose()["services"]["detector-0"]["environment"]) | set(k8s_objects()["ConfigMap"]["data"])
        needed = {"--" + name[len("FLOWWARDEN_") :].lower().replace("_", "-") for name in env & ENV_FROM_FLAGS}
        assert not needed - options, f"deploy/ sets options that detector run lacks: {sorted(needed - options)}"


def test_compose_bind_mounts_exist() -> None:
    created_at_run_time = {"./registry", "./runs"}
    for name, svc in compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and source not in created_at_run_time:
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"


def test_compose_prometheus_and_grafana_are_wired() -> None:
    services = compose()["services"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in services["prometheus"]["volumes"]
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")[0]
    assert "/etc/prometheus/alerts.yml" in prometheus["rule_files"]
    [alertmanagers] = prometheus["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "alertmanager" in services and "alertmanager" in services["prometheus"]["depends_on"]
    assert (
        "./alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" in services["alertmanager"]["volumes"]
    )
    routes = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")[0]
    receivers = {receiver["name"] for receiver in routes["receivers"]}
    assert routes["route"]["receiver"] in receivers
    assert all(route["receiver"] in receivers for route in routes["route"].get("routes", []))
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "flowwarden-detector")
    [targets] = job["static_configs"]
    slots = detector_slots()
    ports = {detector["environment"]["FLOWWARDEN_METRICS_PORT"] for detector in slots.values()}
    assert targets["targets"] == [f"{name}:{port}" for name in slots for port in ports], "every slot is scraped"

    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")[0]
    assert datasource["datasources"][0]["uid"] == "prometheus"
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "flowwarden.yaml")[0]
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in services["grafana"]["volumes"]


# --- Kubernetes ------------------------------------------------------------------------------------


def test_kustomization_resources_exist() -> None:
    kustomization = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")[0]
    assert kustomization["namespace"] == "flowwarden"
    for name in kustomization["resources"]:
        assert (DEPLOY / "k8s" / name).is_file(), name
    kinds = set(k8s_objects())
    expected = {"Namespace", "ConfigMap", "Secret", "StatefulSet", "PersistentVolumeClaim", "Service"}
    assert expected | {"PodDisruptionBudget"} <= kinds


def test_kustomize_builds() -> None:
    """`kubectl kustomize` (client side, no cluster) renders every object into the namespace."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s")], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert {doc["kind"] for doc in objects} >= {"Namespace", "StatefulSet", "Service", "PodDisruptionBudget"}
    for doc in objects:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "flowwarden", doc["kind"]


def test_every_k8s_object_is_well_formed() -> None:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in load_yaml(path):
            if path.name == "kustomization.yaml":
                continue
            assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), path.name


def test_workers_probes_and_lifecycle() -> None:
    objects = k8s_objects()
    workers = objects["StatefulSet"]
    spec = workers["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["replicas"] == 3
    assert pod["terminationGracePeriodSeconds"] == 60
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == 9108
    assert container["args"] == ["run"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_workers_is_locked_down() -> None:
    pod = k8s_objects()["StatefulSet"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["registry"]["mountPath"] == "/registry" and mounts["registry"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["registry"]["persistentVolumeClaim"]["claimName"] == "flowwarden-registry"


def test_workers_configuration_sources_match() -> None:
    objects = k8s_objects()
    container = objects["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    sources = {next(iter(s)): s[next(iter(s))] for s in container["envFrom"]}
    assert sources == {"configMapRef": {"name": objects["ConfigMap"]["metadata"]["name"]}}
    assert objects["PersistentVolumeClaim"]["metadata"]["name"] == "flowwarden-registry"

    settings = objects["ConfigMap"]["data"]
    assert set(settings) - NOT_FLAGS <= ENV_FROM_FLAGS
    for flag, allowed in CHOICES.items():
        env = "FLOWWARDEN_" + flag[2:].upper().replace("-", "_")
        if env in settings:
            assert settings[env] in allowed, (env, settings[env])
    assert settings["FLOWWARDEN_METRICS_PORT"] == "9108"


def test_kafka_credentials_are_files_the_settings_read(tmp_path, monkeypatch) -> None:
    """The Secret is mounted where FLOWWARDEN_SECRETS_DIR points, and its keys are secret files the settings
    machinery turns into librdkafka properties (never environment variables)."""
    objects = k8s_objects()
    pod = objects["StatefulSet"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "flowwarden-kafka-sasl")
    assert volume["secret"]["optional"] is True, "PLAINTEXT clusters need no Secret"
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    assert objects["ConfigMap"]["data"]["FLOWWARDEN_SECRETS_DIR"] == mount["mountPath"]
    assert "secretRef" not in str(container.get("envFrom")), "credentials must not be environment variables"
    secret = objects["Secret"]["stringData"]
    assert objects["Secret"]["metadata"]["name"] == volume["secret"]["secretName"]
    for key, value in secret.items():  # what the volume holds: one file per key
        (tmp_path / key).write_text(value + "\n", encoding="utf-8")
    monkeypatch.setenv("FLOWWARDEN_SECRETS_DIR", str(tmp_path))
    settings = load_settings(RunSettings, {})
    assert settings.kafka == {key.removeprefix("kafka."): value for key, value in secret.items()}
    assert {"sasl.username", "sasl.password"} <= set(settings.kafka)


def test_each_pod_serves_exactly_once_under_its_own_name(monkeypatch) -> None:
    """A pod's successor takes its stable name, so it fences the predecessor's transactional.id and takes
    its place in the group."""
    objects = k8s_objects()
    workers = objects["StatefulSet"]["spec"]
    assert "volumeClaimTemplates" not in workers, "the workers keep no state of their own"
    assert workers["serviceName"] == objects["Service"]["metadata"]["name"]
    assert objects["Service"]["spec"]["clusterIP"] == "None", "a StatefulSet's governing Service is headless"
    container = workers["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["FLOWWARDEN_TRANSACTIONAL_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    monkeypatch.setenv("FLOWWARDEN_TRANSACTIONAL_ID", "flowwarden-detector-2")
    settings = load_settings(RunSettings, {})
    assert settings.transactional_id == "flowwarden-detector-2"
    # The same name is the pod's static group membership: a restarted pod gets its partitions back at once.
    assert consumer_config(settings)["group.instance.id"] == "flowwarden-detector-2"


def test_service_and_pdb_select_the_detector_pods() -> None:
    objects = k8s_objects()
    labels = objects["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert objects["StatefulSet"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["ports"][0]["port"] == 9108


# --- monitoring, autoscaling, network, training (Kubernetes) ------------------------------------------------

JOB = "flowwarden-detector"  # the scrape job name the rules select on


def k8s_file(path: str) -> list[dict[str, Any]]:
    return load_yaml(DEPLOY / "k8s" / path)


def test_no_object_invites_annotation_scraping() -> None:
    """An annotation-based job (prometheus.io/scrape) would scrape each pod a second time, under its own job name."""
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for document in load_yaml(path):
            for metadata in (document.get("metadata", {}), _pod_template(document).get("metadata", {})):
                assert not any(key.startswith("prometheus.io/") for key in metadata.get("annotations") or {}), path


def _pod_template(document: dict[str, Any]) -> dict[str, Any]:
    return document.get("spec", {}).get("template", {}) if isinstance(document.get("spec"), dict) else {}


def test_each_worker_is_scraped_once_under_the_job_the_rules_use() -> None:
    objects = k8s_objects()
    [monitor] = k8s_file("prometheus-operator/servicemonitor.yaml")
    service = objects["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert {"action": "replace", "targetLabel": "job", "replacement": JOB} in endpoint["relabelings"]
    # every scrape configuration shipped names the job alike
    compose_jobs = [j["job_name"] for j in load_yaml(DEPLOY / "prometheus" / "prometheus.yml")[0]["scrape_configs"]]
    assert JOB in compose_jobs
    [kubernetes_job] = load_yaml(DEPLOY / "prometheus" / "kubernetes-scrape.yml")[0]["scrape_configs"]
    assert kubernetes_job["job_name"] == JOB
    keep = next(rule for rule in kubernetes_job["relabel_configs"] if rule["action"] == "keep")
    assert keep["regex"] == f"{service['metadata']['name']};{service['spec']['ports'][0]['name']}"
    jobs = {match for rule in rules() for match in re.findall(r'up\{job="([^"]+)"\}', rule["expr"])}
    assert jobs == {JOB}, "the rules select on the job the scrape configurations produce"


def test_no_workers_means_no_target_of_the_job_is_up() -> None:
    no_workers = next(rule for rule in rules() if rule["alert"] == "FlowwardenNoWorkers")
    assert no_workers["expr"].strip() == f'absent(up{{job="{JOB}"}} == 1)'
    [scaled] = k8s_file("keda/scaledobject.yaml")
    assert scaled["spec"]["minReplicaCount"] >= 1, "scaling to zero would fire FlowwardenNoWorkers by design"


def test_the_operators_rules_are_alerts_yml() -> None:
    from tests.deploy.prometheus_rule import render

    [rule] = k8s_file("prometheus-operator/prometheusrule.yaml")
    assert rule["spec"] == load_yaml(DEPLOY / "prometheus" / "alerts.yml")[0]
    assert (DEPLOY / "k8s" / "prometheus-operator" / "prometheusrule.yaml").read_text(encoding="utf-8") == render()


def test_the_optional_kustomizations_name_files_that_exist() -> None:
    for folder in ("keda", "prometheus-operator"):
        [kustomization] = k8s_file(f"{folder}/kustomization.yaml")
        assert kustomization["namespace"] == "flowwarden"
        for name in kustomization["resources"]:
            assert (DEPLOY / "k8s" / folder / name).is_file(), (folder, name)


def test_keda_scales_the_workers_on_their_own_group_and_topic() -> None:
    objects = k8s_objects()
    [scaled] = k8s_file("keda/scaledobject.yaml")
    target = scaled["spec"]["scaleTargetRef"]
    workers = objects["StatefulSet"]
    assert (target["kind"], target["name"]) == (workers["kind"], workers["metadata"]["name"])
    [trigger] = scaled["spec"]["triggers"]
    config = objects["ConfigMap"]["data"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["FLOWWARDEN_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["FLOWWARDEN_INPUT_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == config["FLOWWARDEN_BOOTSTRAP_SERVERS"]
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    partitions = int(
        re.search(r"--topic flows --partitions (\d+)", " ".join(compose()["services"]["kafka-init"]["command"]))[1]
    )
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions
    [auth] = k8s_file("keda/triggerauthentication.yaml")
    secret = objects["Secret"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_the_network_policy_lets_the_workers_be_scraped_and_reach_kafka_and_dns() -> None:
    objects = k8s_objects()
    policy = objects["NetworkPolicy"]["spec"]
    pod = objects["StatefulSet"]["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ports = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
    assert [port["port"] for rule in policy["ingress"] for port in rule["ports"]] == ["metrics"]
    assert "metrics" in ports
    egress = {(port["port"], port["protocol"]) for rule in policy["egress"] for port in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP")} <= egress
    broker_port = int(objects["ConfigMap"]["data"]["FLOWWARDEN_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    assert (broker_port, "TCP") in egress


def test_the_trainer_job_publishes_to_the_workers_registry() -> None:
    from trainer.cli import build_parser

    documents = {d["kind"] + "/" + d["metadata"]["name"]: d for d in k8s_file("trainer-job.yaml")}
    job = documents["Job/flowwarden-trainer"]["spec"]
    pod = job["template"]["spec"]
    [container] = pod["containers"]
    argv = [arg.replace("$(POD_NAME)", "flowwarden-trainer-x1") for arg in container["args"]]
    build_parser().parse_args(argv)
    values = option_values(argv)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    registry = volumes[mounts[values["--registry"]]["name"]]["persistentVolumeClaim"]
    assert registry["claimName"] == k8s_objects()["PersistentVolumeClaim"]["metadata"]["name"]
    assert not mounts[values["--registry"]].get("readOnly"), "the trainer writes the registry"
    assert mounts[values["--data"]]["readOnly"] is True
    assert values["--out"].startswith("/runs/") and "/runs" in mounts
    assert any(e["name"] == "POD_NAME" for e in container["env"]), "each run its own directory"
    for claim in (volumes[mounts[p]["name"]]["persistentVolumeClaim"]["claimName"] for p in ("/data", "/runs")):
        assert f"PersistentVolumeClaim/{claim}" in documents
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"


# --- compose: exposure, credentials, data ---------------------------------------------------------------


def test_compose_publishes_every_port_on_loopback_by_default() -> None:
    published = [(name, port) for name, svc in compose()["services"].items() for port in svc.get("ports", [])]
    assert {name for name, _ in published} == {"kafka", "prometheus", "alertmanager", "grafana"}
    for name, port in published:
        assert str(port).startswith("${FLOWWARDEN_BIND:-127.0.0.1}:"), (name, port)


def test_compose_has_no_default_admin_password() -> None:
    grafana = compose()["services"]["grafana"]["environment"]
    password = grafana["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), "required, with no default"
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    assert "admin/admin" not in text and ":-admin}" not in text


def test_compose_reads_the_data_from_a_variable() -> None:
    services = compose()["services"]
    for name in ("trainer", "replay"):
        [mount] = [v for v in services[name]["volumes"] if v.endswith(":/data:ro")]
        assert mount.startswith("${FLOWWARDEN_DATA:-"), (name, mount)
    assert option_values(services["trainer"]["command"])["--data"] == "/data"
    assert services["replay"]["command"][1] == "/data"
    assert "cicids2017" not in (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    example = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    variables = set(re.findall(r"\$\{([A-Z_]+)[:}]", (DEPLOY / "compose.yaml").read_text(encoding="utf-8")))
    assert variables <= set(re.findall(r"^([A-Z_]+)=", example, re.M)), "every variable is in .env.example"


# --- Prometheus rules and Grafana dashboard --------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    document = load_yaml(DEPLOY / "prometheus" / "alerts.yml")[0]
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "flowwarden.json").read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_exported_metric_is_documented_with_its_type() -> None:
    table = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert len(exported_metrics()) >= 15, "the worker's registry lists its metrics"
    for name, kind in exported_metrics().items():
        series = f"{name}_total" if kind == "counter" else name
        assert re.search(rf"^\| `{series}(\{{[a-z0-9_,]+\}})?` \| {kind}\b", table, re.M), f"{series} ({kind})"


def test_alert_rules_are_well_formed() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["expr"].strip()
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]


def test_alert_rules_cover_the_operational_risks() -> None:
    used = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    assert "flowwarden_consumer_lag" in used
    assert "flowwarden_dead_letters_total" in used
    assert "flowwarden_rewinds_total" in used
    assert {"flowwarden_ready", "flowwarden_model_info"} <= used
    assert "flowwarden_end_to_end_seconds_bucket" in used
    assert any('up{job="flowwarden-detector"}' in rule["expr"] for rule in rules())


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    expressions = [rule["expr"] for rule in rules()] + dashboard_expressions()
    assert expressions
    unknown = {name for expr in expressions for name in METRIC.findall(expr)} - SERIES
    assert not unknown, f"not exported by the detector: {sorted(unknown)}"


def test_dashboard_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "flowwarden.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    used = {name for expr in dashboard_expressions() for name in METRIC.findall(expr)}
    every_metric = COUNTERS | GAUGES | {f"{h}_bucket" for h in HISTOGRAMS}
    assert not every_metric - used, f"not on the dashboard: {sorted(every_metric - used)}"
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
