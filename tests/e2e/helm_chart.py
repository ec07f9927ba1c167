"""Rendering helpers of the Helm chart tests: the rendered objects and how to read them.

Used by tests/e2e/test_helm.py (the chart's tests); tests/e2e/envoy_static.py turns
the rendered EnvoyFilter into an Envoy config. Rendering is offline: the real Helm engine
from the `helm-python-sdk` wheel, no cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "oob-node"
LUA = ROOT / "lua"
RELEASE = "oob-node"
NAMESPACE = "wallarm-node"
ISTIO_KINDS = {"EnvoyFilter", "VirtualService", "ServiceEntry"}
LUA_CM = f"{RELEASE}-lua"


def scenario_values(name: str) -> dict[str, Any] | None:
    if name == "default":
        return None
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text(encoding="utf-8"))


class Rendered:
    """One render: raw template outputs and the parsed objects."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs
        self.objects: list[dict[str, Any]] = [
            doc for path, text in sorted(outputs.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.objects
                 if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
        return found[0]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def workloads(self) -> list[dict[str, Any]]:
        return self.kind("Deployment") + self.kind("StatefulSet")

    def output(self, template: str) -> str:
        return self.outputs[f"oob-node/templates/{template}"]


def render(chart: Any, values: dict[str, Any] | None = None,
           namespace: str = NAMESPACE) -> Rendered:
    return Rendered(chart.render(values, name=RELEASE, namespace=namespace))


def is_istio_side(obj: dict[str, Any]) -> bool:
    """Istio objects and the Lua ConfigMaps live with the proxies, not with the node."""
    lua_cm = obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith(LUA_CM)
    return obj["kind"] in ISTIO_KINDS or lua_cm


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(r: Rendered) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for w in r.workloads():
        for c in pod_spec(w)["containers"]:
            yield w, c


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pods_selected(r: Rendered, selector: dict[str, str]) -> list[dict[str, Any]]:
    return [w for w in r.workloads()
            if matches(selector, w["spec"]["template"]["metadata"]["labels"])]


def inline_lua(r: Rendered) -> str:
    ef = r.kind("EnvoyFilter")[0]
    (patch,) = [p for p in ef["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    return patch["patch"]["value"]["typed_config"]["default_source_code"]["inline_string"]


def lua_layout(r: Rendered) -> dict[str, str]:
    """Relative path under package.path -> content, as the projected volume mounts it."""
    root = r.get("ConfigMap", LUA_CM)
    volume = json.loads(root["metadata"]["annotations"]["sidecar.istio.io/userVolume"])
    mount = json.loads(root["metadata"]["annotations"]["sidecar.istio.io/userVolumeMount"])
    assert mount == {"oob-node-lua": {"mountPath": "/usr/local/share/lua/5.1",
                                      "readOnly": True}}
    files: dict[str, str] = {}
    for source in volume["oob-node-lua"]["projected"]["sources"]:
        data = r.get("ConfigMap", source["configMap"]["name"])["data"]
        assert {i["key"] for i in source["configMap"]["items"]} == set(data)
        for item in source["configMap"]["items"]:
            files[item["path"]] = data[item["key"]]
    return files


def documented_values() -> tuple[list[str], list[str]]:
    """(documented key paths, undocumented leaf paths) of values.yaml: a key is documented
    by a `# --` comment right above it; a documented map documents its children."""
    documented, missing = [], []
    stack: list[tuple[int, str, bool]] = []
    comment = False
    for line in (CHART / "values.yaml").read_text(encoding="utf-8").splitlines():
        if re.match(r"^\s*# -- ", line):
            comment = True
            continue
        if re.match(r"^\s*#", line):
            continue
        m = re.match(r"^(\s*)([A-Za-z_]\w*):(.*)$", line)
        if not m:
            comment = comment and not line.strip()
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k, _ in stack] + [key])
        covered = any(doc for _, _, doc in stack)
        if comment:
            documented.append(path)
        elif rest and not covered:
            missing.append(path)
        stack.append((indent, key, comment or covered))
        comment = False
    return documented, missing
