"""The ``oob-node`` command as a new user meets it: ``run`` on the embedded default, the
README's curl, ``queue peek``/``depth``, ``config``, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

OOB = str(Path(sys.executable).with_name("oob-node"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOB_")}
    env.update({"OOB_DATA_DIR": str(data_dir), **extra})
    return env


def wait_for(predicate, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"oob-node exited early with {proc.returncode}"
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=2) as resp:
            return resp.status < 300
    except OSError:
        return False


def test_config_prints_every_option_with_its_description(tmp_path: Path) -> None:
    out = subprocess.run([OOB, "config"], env=clean_env(tmp_path), capture_output=True,
                         text=True, check=True).stdout
    assert "receiver.trusted_proxies" in out and "[OOB_TRUSTED_PROXIES]" in out
    assert "nginx set_real_ip_from" in out


def test_invalid_value_fails_at_start_naming_the_option(tmp_path: Path) -> None:
    proc = subprocess.run([OOB, "run"], env=clean_env(tmp_path, OOB_REAL_IP_RECURSIVE="maybe"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "receiver.real_ip_recursive" in proc.stderr
    assert not (tmp_path / "redis").exists()  # nothing was started


@pytest.mark.e2e
def test_run_on_the_embedded_default_queues_the_readme_request(tmp_path: Path) -> None:
    ports = {k: free_port() for k in ("mirror", "batch", "console", "metrics")}
    env = clean_env(tmp_path / "data",
                    OOB_MIRROR_LISTEN=f"127.0.0.1:{ports['mirror']}",
                    OOB_BATCH_LISTEN=f"127.0.0.1:{ports['batch']}",
                    OOB_CONSOLE_LISTEN=f"127.0.0.1:{ports['console']}",
                    OOB_PROCESSING_METRICS_LISTEN=f"127.0.0.1:{ports['metrics']}",
                    OOB_WORKERS="1")
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([OOB, "run"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp_path)
    try:
        batch = f"http://127.0.0.1:{ports['batch']}"
        wait_for(lambda: answers(f"{batch}/readyz"), 60, proc)
        token_file = tmp_path / "data" / "api-token"
        assert token_file.exists() and oct(token_file.stat().st_mode)[-3:] == "600"
        url = f"http://127.0.0.1:{ports['mirror']}/etc/passwd"
        assert answers(url, {"X-Forwarded-For": "203.0.113.7"})
        peek = lambda: subprocess.run([OOB, "queue", "peek", "-n", "5"], env=env,  # noqa: E731
                                      capture_output=True, text=True, timeout=30).stdout
        wait_for(lambda: "203.0.113.7" in peek() and "/etc/passwd" in peek(), 20, proc)
        depth = subprocess.run([OOB, "queue", "depth"], env=env, capture_output=True,
                               text=True, timeout=30)
        assert depth.returncode == 0 and "requests" in depth.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()[-2000:]
    # The embedded server stopped with the node: its socket no longer answers.
    sock_path = tmp_path / "data" / "redis" / "redis.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        with pytest.raises(OSError):
            sock.connect(str(sock_path))
