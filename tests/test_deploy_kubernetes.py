"""deploy/kubernetes/: every manifest valid against Kubernetes' own schemas, strictly
(kubernetes-validate, offline), and the manifests consistent with each other and with the
code: real setting names, secrets only from the Secret, the drain inside the grace period,
autoscaling on the metric the app exports, the image of this version."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from voice.app.drain import CLOSE_S, LAST_REPLY_S
from voice.app.metrics import SESSIONS_ACTIVE
from voice.config import ENV_VARS, Settings

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
"""The oldest version the manifests are held to, and kubernetes-validate's newest."""
SECRETS = {
    "VOICE_GATEWAY_API_KEY",
    "VOICE_AUTH_SECRET",
    "VOICE_TWILIO_AUTH_TOKEN",
    "VOICE_TELNYX_STREAM_TOKEN",
    "VOICE_METRICS_TOKEN",
    "VOICE_WEBRTC_ICE_SERVERS",  # carries the TURN credential
}
READ = set(ENV_VARS) | {"VOICE_GATEWAY_HEADERS", "VOICE_WEBRTC_ICE_SERVERS"}
"""Every variable voice reads: ``ENV_VARS``, and the two ``Settings.from_env`` parses itself."""
SECRET_EXAMPLES = {
    "VOICE_GATEWAY_API_KEY": "sk-example",
    "VOICE_AUTH_SECRET": "x" * 48,
    "VOICE_TWILIO_AUTH_TOKEN": "twilio-example",
    "VOICE_METRICS_TOKEN": "metrics-example",
    "VOICE_WEBRTC_ICE_SERVERS": json.dumps(
        [{"urls": "turn:turn.example.com:3478", "username": "voice", "credential": "example"}]
    ),
}
"""Values like the ones the Secret voice-secrets holds."""


def manifests():
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return [KUBE / name for name in kustomization["resources"]]


def load(name):
    return yaml.safe_load((KUBE / name).read_text())


def container():
    (voice,) = load("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return voice


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_strictly(version):
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version,
         *map(str, manifests())],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # A kind it has no schema for would only be a warning: every file must have passed.
    assert "WARN" not in output and "ERROR" not in output, output
    assert output.count(" passed for resource ") == len(manifests()), output


def test_kustomization_lists_every_manifest():
    listed = {path.name for path in manifests()}
    present = {path.name for path in KUBE.glob("*.yaml")}
    # The adapter's values are for its Helm chart, not a resource of this kustomization.
    assert listed == present - {"kustomization.yaml", "prometheus-adapter-values.yaml"}


def test_settings_are_real_and_secrets_come_from_the_secret():
    config = load("configmap.yaml")["data"]
    env = {item["name"]: item for item in container()["env"]}
    names = set(config) | set(env)
    unknown = names - READ
    assert not unknown, f"not settings voice reads: {unknown}"
    assert not SECRETS & set(config), "a secret in the ConfigMap"
    for name in SECRETS & set(env):
        assert "value" not in env[name], f"{name} written into the Deployment"
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "voice-secrets"
    # The two the issue requires, and not optional: without them the pod must not start.
    for name in ("VOICE_GATEWAY_API_KEY", "VOICE_AUTH_SECRET"):
        assert not env[name]["valueFrom"]["secretKeyRef"].get("optional", False)
    assert env["VOICE_WEBRTC_HOST_ADDRESSES"]["valueFrom"]["fieldRef"] == {
        "fieldPath": "status.podIP"
    }
    assert env["VOICE_HOST"]["value"] == "0.0.0.0"

    # What a pod's environment holds makes valid settings.
    pod_env = dict(config) | {n: e["value"] for n, e in env.items() if "value" in e}
    from_secret = [n for n, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})]
    pod_env |= {name: SECRET_EXAMPLES[name] for name in from_secret}
    pod_env["VOICE_WEBRTC_HOST_ADDRESSES"] = "10.244.1.17"  # status.podIP
    settings = Settings.from_env(pod_env)
    assert settings.server.host == "0.0.0.0"
    assert settings.server.max_sessions == int(config["VOICE_MAX_SESSIONS"])
    assert settings.auth.secret is not None
    assert settings.webrtc.host_addresses == ("10.244.1.17",)
    assert settings.webrtc.ice_servers[0].username == "voice"


def test_probes_and_the_grace_period_fit_the_drain():
    pod = load("deployment.yaml")["spec"]["template"]["spec"]
    voice = container()
    (port,) = voice["ports"]
    assert voice["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert voice["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert voice["env"][[e["name"] for e in voice["env"]].index("VOICE_PORT")]["value"] == str(
        port["containerPort"]
    )
    drain_s = int(load("configmap.yaml")["data"]["VOICE_DRAIN_TIMEOUT_S"])
    command = voice["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    # The kubelet kills at the grace period, counted from the start of preStop: it must
    # cover the wait, the drain and the last replies' end.
    last_calls_s = LAST_REPLY_S + CLOSE_S
    assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + drain_s + last_calls_s
    strategy = load("deployment.yaml")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_autoscaling_on_the_sessions_gauge_the_app_exports():
    hpa = load("horizontalpodautoscaler.yaml")["spec"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == SESSIONS_ACTIVE
    target = int(metric["pods"]["target"]["averageValue"])
    assert 0 < target < int(load("configmap.yaml")["data"]["VOICE_MAX_SESSIONS"])
    assert hpa["scaleTargetRef"]["name"] == load("deployment.yaml")["metadata"]["name"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]

    (rule,) = load("prometheus-adapter-values.yaml")["rules"]["custom"]
    assert rule["seriesQuery"].startswith(SESSIONS_ACTIVE + "{")
    assert rule["name"]["as"] == SESSIONS_ACTIVE
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    annotations = load("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container()["ports"][0]["containerPort"]


def test_selectors_match_the_pods_and_the_image_is_this_version():
    labels = load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    for name in ("service.yaml",):
        assert load(name)["spec"]["selector"].items() <= labels.items()
    for name in ("deployment.yaml", "poddisruptionbudget.yaml"):
        assert load(name)["spec"]["selector"]["matchLabels"].items() <= labels.items()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container()["image"] == f"voice:{version}"
    # The Dockerfile's user: the pod runs as it, without root.
    security = load("deployment.yaml")["spec"]["template"]["spec"]["securityContext"]
    assert "USER 10001" in (ROOT / "Dockerfile").read_text()
    assert security["runAsUser"] == 10001 and security["runAsNonRoot"] is True


def test_the_kit_points_at_sections_of_the_guide_that_exist():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in guide.splitlines()
        if line.startswith("## ")
    }
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file():
            for anchor in re.findall(r"docs/deploy\.md#([a-z0-9-]+)", path.read_text()):
                assert anchor in anchors, f"{path.name} points at a missing section #{anchor}"
