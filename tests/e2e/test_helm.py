"""The Helm chart (helm/oob-node), rendered and linted by the real Helm engine.

Helm runs in-process through the `helm-python-sdk` wheel (libhelm_c: Helm's Go SDK), with no
cluster: `lookup` returns nothing, so generated secrets are fresh per render. Every scenario of
helm/oob-node/ci/ plus the defaults is rendered once per session and checked for what a
cluster would reject or a reviewer would flag: object inventory, namespaces, selectors, ports,
probes, security context, secret references, the config the node really parses, the Lua
plugin's bytes, the EnvoyFilter accepted by the real Envoy binary, and a checkov scan.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from envoy_static import envoy_validate, static_bootstrap, strict, write_layout
from helm_chart import (
    CHART,
    LUA,
    LUA_CM,
    NAMESPACE,
    RELEASE,
    Rendered,
    containers,
    documented_values,
    inline_lua,
    is_istio_side,
    lua_layout,
    matches,
    pod_spec,
    pods_selected,
    render,
    scenario_values,
)

from node.config import build_config

pytestmark = pytest.mark.e2e

SCENARIOS = ["default"] + sorted(p.name.removesuffix("-values.yaml")
                                 for p in (CHART / "ci").glob("*-values.yaml"))
NODE_KINDS = {"Deployment", "StatefulSet", "Service", "Secret", "ConfigMap", "ServiceAccount",
              "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy",
              "ServiceMonitor"}

BASE_INVENTORY = {
    ("Deployment", f"{RELEASE}-processing"), ("Deployment", f"{RELEASE}-aggregation"),
    ("Service", f"{RELEASE}-processing"), ("Service", f"{RELEASE}-aggregation"),
    ("Service", f"{RELEASE}-valkey"), ("StatefulSet", f"{RELEASE}-valkey"),
    ("Secret", f"{RELEASE}-tokens"), ("Secret", f"{RELEASE}-redis"),
    ("ConfigMap", f"{RELEASE}-config"), ("ConfigMap", LUA_CM), ("ConfigMap", f"{LUA_CM}-oob"),
    ("EnvoyFilter", f"{RELEASE}-lua"), ("PodDisruptionBudget", f"{RELEASE}-processing"),
    ("ServiceAccount", RELEASE),
}
VALKEY = {("StatefulSet", f"{RELEASE}-valkey"), ("Service", f"{RELEASE}-valkey")}
INVENTORY = {  # scenario -> (objects added, objects removed) relative to BASE_INVENTORY
    "default": (set(), set()),
    "gateway": ({("VirtualService", f"{RELEASE}-mirror")}, set()),
    "sidecar": ({("VirtualService", f"{RELEASE}-mirror")}, set()),
    "external-redis": (set(), VALKEY),
    "hpa": ({("HorizontalPodAutoscaler", f"{RELEASE}-processing"),
             ("ServiceMonitor", f"{RELEASE}-processing"),
             ("ServiceMonitor", f"{RELEASE}-aggregation")}, set()),
    "networkpolicy": ({("NetworkPolicy", f"{RELEASE}-processing"),
                       ("NetworkPolicy", f"{RELEASE}-aggregation"),
                       ("NetworkPolicy", f"{RELEASE}-valkey")}, set()),
}
ISTIO_NAMESPACE = {"sidecar": "shop"}  # scenario -> namespace of the Istio objects


# ---------------------------------------------------------------- rendering

@pytest.fixture(scope="session")
def chart() -> Iterator[Any]:
    helm.disable_logging()  # the symlink notice of the loader is expected
    loaded = helm.Chart.load(str(CHART))
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def rendered(chart: Any) -> dict[str, Rendered]:
    return {name: render(chart, scenario_values(name)) for name in SCENARIOS}


# ---------------------------------------------------------------- lint and inventory

def test_every_scenario_is_tested() -> None:
    assert set(SCENARIOS) == set(INVENTORY)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_has_no_errors_or_warnings(scenario: str) -> None:
    helm.disable_logging()
    report = helm.lint(str(CHART), scenario_values(scenario), strict=True, namespace=NAMESPACE,
                       kube_version="v1.29.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_bad_values() -> None:
    helm.disable_logging()
    report = helm.lint(str(CHART), {"processing": {"workers": "many"}}, strict=True)
    assert any("/processing/workers" in e for e in report["errors"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_objects_rendered(rendered: dict[str, Rendered], scenario: str) -> None:
    added, removed = INVENTORY[scenario]
    got = {(o["kind"], o["metadata"]["name"]) for o in rendered[scenario].objects}
    assert got == (BASE_INVENTORY | added) - removed


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_namespaces(rendered: dict[str, Rendered], scenario: str) -> None:
    istio_ns = ISTIO_NAMESPACE.get(scenario, "istio-system")
    for obj in rendered[scenario].objects:
        ns = obj["metadata"]["namespace"]
        if is_istio_side(obj):
            assert ns == istio_ns, obj["metadata"]["name"]
        else:
            assert obj["kind"] in NODE_KINDS and ns == NAMESPACE, obj["metadata"]["name"]


@pytest.mark.parametrize(("release_ns", "override", "expected"), [
    ("default", None, NAMESPACE),           # namespaceOverride defaults to wallarm-node
    ("other", "", "other"),                 # empty override: the release namespace
    ("other", "team-sec", "team-sec"),
])
def test_namespace_override(chart: Any, release_ns: str, override: str | None,
                            expected: str) -> None:
    values = None if override is None else {"namespaceOverride": override}
    r = render(chart, values, namespace=release_ns)
    assert {o["metadata"]["namespace"] for o in r.objects if not is_istio_side(o)} == {
        expected}
    host = f"{RELEASE}-processing.{expected}.svc.cluster.local"
    assert host in r.output("istio/envoyfilter.yaml")


# ---------------------------------------------------------------- wiring

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_selectors_match_pods_and_never_hold_versions(rendered: dict[str, Rendered],
                                                      scenario: str) -> None:
    r = rendered[scenario]
    for w in r.workloads():
        sel = w["spec"]["selector"]["matchLabels"]
        assert matches(sel, w["spec"]["template"]["metadata"]["labels"])
        assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(sel)
    for svc in r.kind("Service"):
        assert len(pods_selected(r, svc["spec"]["selector"])) == 1, svc["metadata"]["name"]
    for obj in r.kind("PodDisruptionBudget") + r.kind("NetworkPolicy"):
        sel = obj["spec"].get("selector") or obj["spec"]["podSelector"]
        assert len(pods_selected(r, sel["matchLabels"])) == 1, obj["metadata"]["name"]
    for hpa in r.kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert r.get(target["kind"], target["name"])
        assert "replicas" not in r.get(target["kind"], target["name"])["spec"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_ports_reach_container_ports(rendered: dict[str, Rendered],
                                             scenario: str) -> None:
    r = rendered[scenario]
    expected = {f"{RELEASE}-processing": {8445, 8446, 9464}, f"{RELEASE}-aggregation": {8080},
                f"{RELEASE}-valkey": {6379}}
    for svc in r.kind("Service"):
        (workload,) = pods_selected(r, svc["spec"]["selector"])
        names = {p["name"]: p["containerPort"]
                 for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        ports = svc["spec"]["ports"]
        assert {p["port"] for p in ports} == expected[svc["metadata"]["name"]]
        for p in ports:
            assert names[p["targetPort"]] == p["port"]
    for sm in r.kind("ServiceMonitor"):
        svc = r.get("Service", sm["metadata"]["name"])
        assert matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= {
            p["name"] for p in svc["spec"]["ports"]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_node_containers_run_their_role_with_probes(rendered: dict[str, Rendered],
                                                    scenario: str) -> None:
    roles = {"receiver": "batch", "processing": "metrics", "aggregation": "console"}
    seen = set()
    for _w, c in containers(rendered[scenario]):
        if c["name"] == "valkey":
            assert c["livenessProbe"] and c["readinessProbe"]
            continue
        role = c["args"][0]
        seen.add(role)
        port_names = {p["name"] for p in c["ports"]}
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            assert c[probe]["httpGet"] == {"path": path, "port": roles[role]}
            assert roles[role] in port_names
        assert c["resources"]["requests"] and c["resources"]["limits"]
    assert seen == set(roles)


def test_processing_pod_runs_receiver_and_workers(rendered: dict[str, Rendered]) -> None:
    w = rendered["hpa"].get("Deployment", f"{RELEASE}-processing")
    args = {c["name"]: c["args"] for c in pod_spec(w)["containers"]}
    assert args == {"receiver": ["receiver"], "processing": ["processing", "--workers", "4"]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_security_context(rendered: dict[str, Rendered], scenario: str) -> None:
    for w, c in containers(rendered[scenario]):
        pod = pod_spec(w)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["automountServiceAccountToken"] is False
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        assert {"/data", "/tmp"} <= writable


def secret_keys(r: Rendered) -> dict[str, set[str]]:
    return {s["metadata"]["name"]: set(s.get("data", {})) for s in r.kind("Secret")}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_secret_references_exist(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    secrets = secret_keys(r)
    refs = 0
    for w, c in containers(r):
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs += 1
                assert ref["key"] in secrets[ref["name"]], (c["name"], env["name"])
        for vol in pod_spec(w).get("volumes", []):
            if "secret" in vol:
                assert vol["secret"]["secretName"] in secrets
    assert refs >= 3  # Redis credentials reach every node container


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_configmap_holds_no_secret(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    values = [base64.b64decode(v).decode() for s in r.kind("Secret")
              for v in s["data"].values()]
    text = json.dumps([c["data"] for c in r.kind("ConfigMap")])
    assert values and not [v for v in values if v in text]


def node_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would give it (Secret values faked)."""
    env: dict[str, str] = {}
    for e in container["env"]:
        value = e.get("value", "from-secret")
        env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), value)
    return env


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_node_accepts_rendered_config(rendered: dict[str, Rendered], scenario: str,
                                      tmp_path: Path) -> None:
    r = rendered[scenario]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(r.get("ConfigMap", f"{RELEASE}-config")["data"]["config.yaml"])
    secrets = secret_keys(r)
    for w, c in containers(r):
        if c["name"] == "valkey":
            continue
        env = node_env(c)
        assert env["OOB_CONFIG"] == "/etc/oob-node/config.yaml"
        cfg = build_config(str(config_path), env=env)
        assert cfg.redis.url and cfg.data_dir == "/data"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in pod_spec(w)["volumes"]}
        assert mounts["config"] == str(Path(env["OOB_CONFIG"]).parent)
        assert vols["data"]["emptyDir"] and vols["tmp"]["emptyDir"]
        token_secret = vols["tokens"]["secret"]["secretName"]
        for token_file in (cfg.receiver.batch_token_file, cfg.aggregation.api_token_file):
            path = Path(token_file)
            assert str(path.parent) == mounts["tokens"] and path.name in secrets[token_secret]
        listen = {p["name"]: p["containerPort"] for p in c["ports"]}
        bound = {"mirror": cfg.receiver.mirror_listen, "batch": cfg.receiver.batch_listen,
                 "metrics": cfg.processing.metrics_listen,
                 "console": cfg.aggregation.console_listen}
        for name, port in listen.items():
            assert bound[name] == f"0.0.0.0:{port}"


def test_config_checksum_rolls_pods(chart: Any, rendered: dict[str, Rendered]) -> None:
    base = rendered["default"]
    digest = hashlib.sha256(base.output("configmap.yaml").encode()).hexdigest()
    changed = render(chart, {"config": {"logging": {"level": "debug"}}})
    for w in base.kind("Deployment"):
        annotations = w["spec"]["template"]["metadata"]["annotations"]
        assert annotations["checksum/config"] == digest
        other = changed.get("Deployment", w["metadata"]["name"])
        assert other["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != digest


# ---------------------------------------------------------------- values documentation

def test_every_value_is_commented_and_in_the_readme_table() -> None:
    documented, missing = documented_values()
    assert len(documented) > 80 and missing == []
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    assert [p for p in documented if f"| `{p}` |" not in readme] == []


# ---------------------------------------------------------------- tokens and schema

@pytest.mark.parametrize(("values", "expected"), [
    (None, None),                                            # generated
    ({"auth": {"batchToken": "given-Token_1", "apiToken": "api-2"}}, "given-Token_1"),
])
def test_batch_token_shared_by_secret_and_plugin(chart: Any, values: dict[str, Any] | None,
                                                 expected: str | None) -> None:
    r = render(chart, values)
    data = r.get("Secret", f"{RELEASE}-tokens")["data"]
    batch = base64.b64decode(data["batch-token"]).decode()
    api = base64.b64decode(data["api-token"]).decode()
    if expected is None:
        assert re.fullmatch(r"[A-Za-z0-9]{40}", batch) and re.fullmatch(r"[A-Za-z0-9]{40}", api)
        assert batch != api
    else:
        assert batch == expected
    assert re.search(r'^\s*token = "([^"]*)",$', inline_lua(r), re.M).group(1) == batch


@pytest.mark.parametrize("values", [
    {"istio": {"mode": "ambient"}},
    {"config": {"receiver": {"batch_token": "x"}}},          # secrets never in the ConfigMap
    {"config": {"aggregation": {"api_token": "x"}}},
    {"istio": {"plugin": {"config": {"token": "x"}}}},       # the chart sets it
    {"istio": {"plugin": {"config": {"batch_sise": 10}}}},   # typo
    {"istio": {"plugin": {"config": {"sample_rate": 2}}}},
    {"auth": {"batchToken": "has space"}},
    {"ports": {"mirror": 70000}},
    {"aggregation": {"replicas": 2}},
    {"processing": {"workers": 0}},
    {"unknownTopLevel": 1},
])
def test_schema_rejects(chart: Any, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


@pytest.mark.parametrize(("values", "message"), [
    ({"redis": {"enabled": False}}, "needs a Redis"),
    ({"externalRedis": {"enabled": True}, "redis": {"enabled": False}}, "externalRedis.url"),
    ({"auth": {"existingSecret": "mine"}}, "must exist before install"),
])
def test_render_refuses_incomplete_values(chart: Any, values: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(chart, values)


def test_notes_tell_how_to_reach_console_and_attack(rendered: dict[str, Rendered]) -> None:
    notes = rendered["default"].outputs["oob-node/templates/NOTES.txt"]
    assert f"port-forward svc/{RELEASE}-aggregation 8080:8080" in notes
    assert f"get secret {RELEASE}-tokens" in notes and "api-token" in notes
    assert "/api/v1/attacks" in notes and "%3Cscript%3E" in notes
    assert "sidecar.istio.io/userVolume:" in notes


# ---------------------------------------------------------------- the Lua plugin

@pytest.mark.parametrize("scenario", ["default", "sidecar"])
def test_lua_configmaps_are_byte_identical_to_lua_dir(rendered: dict[str, Rendered],
                                                      scenario: str) -> None:
    files = lua_layout(rendered[scenario])
    expected = {p.relative_to(LUA).as_posix(): p.read_bytes() for p in LUA.rglob("*.lua")}
    assert expected and "oob_mirror.lua" in expected
    assert {k: v.encode() for k, v in files.items()} == expected


def test_inline_code_carries_the_modules_digest(rendered: dict[str, Rendered]) -> None:
    """A new plugin version changes the EnvoyFilter, so Istio pushes it to the proxies."""
    items = sorted(f"files/lua/{p.relative_to(LUA).as_posix()}\n"
                   f"{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in LUA.rglob("*.lua"))
    digest = hashlib.sha256("\n".join(items).encode()).hexdigest()
    assert f"-- modules sha256: {digest}\n" in inline_lua(rendered["default"])


def test_chart_links_lua_dir_instead_of_copying() -> None:
    link = CHART / "files" / "lua"
    assert link.is_symlink() and link.resolve() == LUA.resolve()


def test_packaged_chart_carries_the_lua_files(tmp_path: Path) -> None:
    helm.disable_logging()
    archive = helm.package(str(CHART), destination=str(tmp_path))
    with tarfile.open(archive) as tar:
        packed = {m.name.removeprefix("oob-node/files/lua/"): tar.extractfile(m).read()
                  for m in tar.getmembers() if m.name.startswith("oob-node/files/lua/")
                  and m.isfile()}
    assert packed == {p.relative_to(LUA).as_posix(): p.read_bytes()
                      for p in LUA.rglob("*.lua")}


# ---------------------------------------------------------------- EnvoyFilter -> real Envoy

@pytest.mark.parametrize("scenario", ["default", "gateway", "sidecar"])
def test_envoy_accepts_rendered_envoyfilter(rendered: dict[str, Rendered], scenario: str,
                                            tmp_path: Path) -> None:
    r = rendered[scenario]
    lua_dir = write_layout(lua_layout(r), tmp_path / "lua")
    config = static_bootstrap(r.kind("EnvoyFilter")[0], strict(inline_lua(r)))
    rc, out = envoy_validate(config, lua_dir, tmp_path)
    assert rc == 0 and "OK" in out, out[-3000:]


@pytest.mark.parametrize("breakage", ["modules not mounted", "unknown plugin option"])
def test_envoy_validation_can_fail(rendered: dict[str, Rendered], breakage: str,
                                   tmp_path: Path) -> None:
    r = rendered["default"]
    lua_dir = write_layout(lua_layout(r), tmp_path / "lua")
    source = strict(inline_lua(r))
    if breakage == "modules not mounted":
        lua_dir = None
    else:
        source = source.replace("batch_size =", "batch_sise =")
    rc, out = envoy_validate(static_bootstrap(r.kind("EnvoyFilter")[0], source), lua_dir,
                             tmp_path)
    assert rc != 0, out[-2000:]


def test_missing_modules_leave_the_plugin_inert(rendered: dict[str, Rendered],
                                                tmp_path: Path) -> None:
    """As rendered (not strict), a proxy whose Lua ConfigMaps are not mounted yet still
    accepts the configuration: a forgotten mount never blocks the gateway's updates."""
    r = rendered["default"]
    rc, out = envoy_validate(static_bootstrap(r.kind("EnvoyFilter")[0], inline_lua(r)), None,
                             tmp_path)
    assert rc == 0 and "OK" in out, out[-3000:]


def test_envoyfilter_modes(rendered: dict[str, Rendered]) -> None:
    def contexts(r: Rendered) -> dict[str, str]:
        ef = r.kind("EnvoyFilter")[0]
        return {p["applyTo"]: p["match"]["context"] for p in ef["spec"]["configPatches"]}

    gw, sc = rendered["gateway"], rendered["sidecar"]
    assert contexts(gw) == {"HTTP_FILTER": "GATEWAY", "CLUSTER": "GATEWAY"}
    assert gw.kind("EnvoyFilter")[0]["spec"]["workloadSelector"]["labels"] == {
        "istio": "ingressgateway"}
    assert contexts(sc) == {"HTTP_FILTER": "SIDECAR_INBOUND"}  # posts over the mesh cluster
    assert sc.kind("EnvoyFilter")[0]["spec"]["workloadSelector"]["labels"] == {"app": "shop"}
    assert f'cluster = "outbound|8446||{RELEASE}-processing.{NAMESPACE}.svc.cluster.local"' in (
        inline_lua(sc))
    assert 'sample_rate = 0.5' in inline_lua(gw) and '["cluster"] = "prod-eu-1"' in inline_lua(gw)


def test_virtualservice_mirrors_to_the_receiver(rendered: dict[str, Rendered]) -> None:
    vs = rendered["gateway"].get("VirtualService", f"{RELEASE}-mirror")
    (route,) = vs["spec"]["http"]
    assert route["mirror"] == {"host": f"{RELEASE}-processing.{NAMESPACE}.svc.cluster.local",
                               "port": {"number": 8445}}
    assert route["mirrorPercentage"] == {"value": 25.0}
    assert vs["spec"]["gateways"] == ["istio-system/ingressgateway"]


def test_serviceentry_declares_mirror_and_batch_ports(chart: Any) -> None:
    r = render(chart, {"istio": {"serviceEntry": {
        "enabled": True, "hosts": ["oob.example.internal"], "resolution": "STATIC",
        "endpoints": [{"address": "10.1.2.3"}]}}})
    se = r.get("ServiceEntry", RELEASE)
    assert se["metadata"]["namespace"] == "istio-system"
    assert se["spec"]["hosts"] == ["oob.example.internal"]
    assert {(p["number"], p["protocol"]) for p in se["spec"]["ports"]} == {
        (8445, "HTTP"), (8446, "HTTP")}
    assert se["spec"]["endpoints"] == [{"address": "10.1.2.3"}]


# ---------------------------------------------------------------- checkov

CHECKOV_ID = re.compile(r"^\|\s*`?(CKV_K8S_\d+)`?\s*\|(.+)\|", re.M)


def documented_skips() -> dict[str, str]:
    """Skipped checkov checks with their justification, from the chart's README table."""
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    return {m.group(1): m.group(2).strip() for m in CHECKOV_ID.finditer(readme)}


@pytest.fixture(scope="session")
def checkov_report(rendered: dict[str, Rendered],
                   tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """checkov run once over every scenario's manifests (it takes a few seconds to start)."""
    binary = Path(sys.executable).with_name("checkov")
    if not binary.exists():
        pytest.fail("checkov missing: install the test extra")
    out = tmp_path_factory.mktemp("manifests")
    for name, r in rendered.items():
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(r.objects), encoding="utf-8")
    # --skip-download: no network (no Prisma Cloud guidelines); all skips are listed below.
    proc = subprocess.run([str(binary), "-d", str(out), "--framework", "kubernetes",
                           "--quiet", "--compact", "--skip-download", "-o", "json"],
                          capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(proc.stdout)
    return report if isinstance(report, list) else [report]


def test_checkov_passes_except_documented_skips(checkov_report: list[dict[str, Any]]) -> None:
    skips = documented_skips()
    assert skips and all(len(why) > 40 for why in skips.values())
    (k8s,) = [r for r in checkov_report if r["check_type"] == "kubernetes"]
    assert k8s["summary"]["parsing_errors"] == 0 and k8s["summary"]["passed"] > 100
    failed = {(f["check_id"], f["resource"]) for f in k8s["results"]["failed_checks"]}
    assert {f for f in failed if f[0] not in skips} == set()
    # no stale skip: each documented one is really needed by some object
    assert {f[0] for f in failed} == set(skips)
