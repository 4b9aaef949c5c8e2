"""The two README commands and the pins they install.

``./kit test`` is what runs this suite, so it is exercised by running at all; here
the other command, ``./kit lab``, is started for real and JupyterLab is asked over
HTTP for the notebooks.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
import urllib.request

import pytest

from facekit.paths import PROJECT_ROOT

PIN = re.compile(r"^\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s#;]+)", re.M)


def _pins(text: str) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version for name, version in PIN.findall(text)}


def test_pins_agree():
    """pyproject.toml, requirements.lock and environment.yml pin the same versions."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    extras = [pin for group in project["optional-dependencies"].values() for pin in group]
    direct = _pins("\n".join(project["dependencies"] + extras))
    lock = _pins((PROJECT_ROOT / "requirements.lock").read_text())
    conda = _pins((PROJECT_ROOT / "environment.yml").read_text())
    assert direct["mediapipe"] == "0.10.21"
    for name, version in direct.items():
        assert lock.get(name) == version, f"{name}: pyproject {version}, requirements.lock {lock.get(name)}"
        assert conda.get(name) == version, f"{name}: pyproject {version}, environment.yml {conda.get(name)}"
    assert not [n for n in lock if "opencv" in n and n != "opencv-contrib-python"], "a second OpenCV package"


def test_readme_commands_and_ci():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "./kit lab" in readme and "./kit test" in readme
    ci = [line for line in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert any(line.strip().endswith("./kit test") for line in ci), ci


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not os.access(PROJECT_ROOT / "kit", os.X_OK), reason="./kit is not executable")
def test_kit_lab_opens_jupyterlab_on_the_notebooks(tmp_path):
    port = _free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    proc = subprocess.Popen(
        [str(PROJECT_ROOT / "kit"), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password="],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, listing = time.time() + 180, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=5) as r:
                    listing = json.load(r)
                break
            except OSError:
                time.sleep(1)
        assert listing is not None, f"JupyterLab did not answer:\n{proc.stdout.read() if proc.poll() is not None else ''}"
        names = {item["name"] for item in listing["content"]}
        assert {"01_data_sampling.ipynb", "02_landmark_normalization.ipynb"} <= names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=10) as r:
            assert r.status == 200 and "JupyterLab" in r.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
