"""Deploy files: what can be validated on this machine is validated.

systemd units go through ``systemd-analyze verify`` (and its offline security score), manifests
through a YAML parser, every embedded or example config through ``gateway.config``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import config_from_dict, load_config
from gateway.ops.keys import init_keys
from gateway.ops.metrics import Metrics, Stats

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXAMPLES = sorted((DEPLOY / "examples").glob("*.toml"))
SRTPGW = Path(sys.executable).with_name("srtpgw")


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"one-pbx-bridge.toml", "peering-point.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads(path: Path) -> None:
    cfg = load_config(path, check_files=False)
    assert cfg.trunks and cfg.listeners
    assert cfg.warnings == ()  # examples show good practice: nothing to warn about
    for t in cfg.trunks:
        assert t.allowed_sources, t.name
        if t.transport == "tls":
            assert t.tls_identity, t.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads_with_real_key_files(path: Path, tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "keys").dir
    (keys / "peers-ca.crt").write_bytes((keys / "ca.crt").read_bytes())
    text = path.read_text().replace("/etc/srtpgw/keys", str(keys))
    copy = tmp_path / path.name
    copy.write_text(text)
    cfg = load_config(copy)
    assert cfg.tls.certificate.parent == keys


def test_example_is_a_usable_template_for_a_trunk() -> None:
    """Every key a trunk needs is present and commented in the one-PBX example."""
    text = (DEPLOY / "examples" / "one-pbx-bridge.toml").read_text()
    for key in ("name", "side", "listener", "transport", "peer", "allowed_sources", "media",
                "route_to", "tls_identity"):
        assert re.search(rf"^{key} = .*#", text, re.M), key


def manifests() -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "srtpgw.yaml").read_text()))
    return [d for d in docs if d]


def test_kubernetes_manifest_parses_and_is_hardened() -> None:
    by_kind = {d["kind"]: d for d in manifests()}
    assert set(by_kind) == {"Namespace", "ConfigMap", "Deployment"}
    for d in by_kind.values():
        assert d["apiVersion"] and d["metadata"]["name"]
    spec = by_kind["Deployment"]["spec"]
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"][
        "labels"].items()
    assert pod["hostNetwork"] is True and pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == set(volumes)
    assert volumes["keys"]["secret"]["secretName"] == "srtpgw-keys"


def test_kubernetes_config_matches_the_pod() -> None:
    by_kind = {d["kind"]: d for d in manifests()}
    raw = tomllib.loads(by_kind["ConfigMap"]["data"]["srtpgw.toml"])
    cfg = config_from_dict(raw, file="srtpgw.yaml#srtpgw.toml", check_files=False)
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    config_arg = Path(c["args"][c["args"].index("-c") + 1])
    assert config_arg.parent == Path(mounts["config"])
    assert cfg.tls.certificate.parent == Path(mounts["keys"])
    assert cfg.cdr.path is not None and cfg.cdr.path.parent == Path(mounts["cdr"])
    probe = c["readinessProbe"]["httpGet"]
    assert (probe["host"], probe["port"]) == (cfg.admin.listen.host, cfg.admin.listen.port)
    assert pod["terminationGracePeriodSeconds"] > cfg.admin.drain_timeout


def unit_text() -> str:
    return (DEPLOY / "systemd" / "srtpgw.service").read_text()


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_unit_hardening() -> None:
    d = directives(unit_text())
    assert d["User"] == ["srtpgw"] and d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"] and d["CapabilityBoundingSet"] == [""]
    assert int(d["LimitNOFILE"][0]) >= 2 * 10000  # default port range, RTP + RTCP each
    timeout = int(d["TimeoutStopSec"][0])
    assert timeout > 30  # the default [admin] drain_timeout
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


@pytest.fixture
def rendered_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's srtpgw, so verify can check binaries."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not available")
    unit = tmp_path / "srtpgw.service"
    unit.write_text(unit_text().replace("/opt/srtpgw/bin/srtpgw", str(SRTPGW)))
    return unit


def test_systemd_analyze_verify(rendered_unit: Path) -> None:
    r = subprocess.run(["systemd-analyze", "verify", str(rendered_unit)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_systemd_analyze_verify_catches_mistakes(rendered_unit: Path) -> None:
    rendered_unit.write_text(rendered_unit.read_text().replace("ProtectSystem=strict",
                                                               "ProtectSytem=strict"))
    r = subprocess.run(["systemd-analyze", "verify", str(rendered_unit)], capture_output=True,
                       text=True, timeout=60)
    assert "Unknown key" in r.stderr


def test_systemd_security_exposure_is_low(rendered_unit: Path) -> None:
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(rendered_unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for srtpgw.service: ([0-9.]+)", r.stdout)
    if m is None:
        pytest.skip(f"this systemd-analyze has no offline security score: {r.stderr.strip()}")
    assert float(m.group(1)) <= 2.0, r.stdout


def test_containerfile_is_multistage_and_non_root() -> None:
    text = (DEPLOY / "container" / "Containerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    stages = [i for i, ln in enumerate(lines) if ln.startswith("FROM ")]
    assert len(stages) == 2 and " AS build" in lines[stages[0]]
    final = lines[stages[1]:]
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(ln.startswith("COPY --from=build ") for ln in final)
    assert "uvloop" in text and "/healthz" in text and "STOPSIGNAL SIGTERM" in text
    assert not any("pip install" in ln for ln in final)  # nothing fetched in the run stage


def test_prometheus_alerts_use_real_metrics() -> None:
    """Every srtpgw_* series an alert names is one the gateway exports."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "srtpgw-alerts.yaml").read_text())
    (group,) = rules["groups"]
    assert group["rules"] and all({"alert", "expr"} <= set(r) for r in group["rules"])
    stats = Stats(srtp_auth_failures={"srtp": 1}, srtp_replays={"srtp": 1},
                  tls_failures={"timeout": 1}, reloads={"refused": 1},
                  cert_expiry={"tls": 2e9})
    exported = set()
    for fam in text_string_to_metric_families(Metrics(lambda: stats).render().decode()):
        exported.update(s.name for s in fam.samples)
    named = {m for r in group["rules"] for m in re.findall(r"srtpgw_[a-z_]+", r["expr"])}
    assert named and named <= exported, named - exported


_KILL_BY_NAME = re.compile(r"\b(pkill|killall|pidof)\b|\bkill\b[^\n]*\$\(\s*pgrep")


def test_nothing_stops_processes_by_name() -> None:
    """A process-name kill (``pkill -x kamailio``) also kills instances this run did not start
    (a developer's own, another checkout's tests): CI stops the distribution's services by unit
    or init script, and each test stops what it started by its pid."""
    files = [ROOT / ".ci" / "run", ROOT / "Makefile",
             *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py"))]
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in files if path != Path(__file__).resolve()
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if _KILL_BY_NAME.search(line) and not line.lstrip().startswith("#")]
    assert offenders == []
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'systemctl stop "$svc.service"' in ci and '"/etc/init.d/$svc" stop' in ci
