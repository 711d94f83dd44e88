"""optuna-dashboard reads the studies archlab writes: a real server on loopback,
its JSON API read back (the study's settings, the trials with archlab's attrs,
the learning curves)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from archlab.cli.main import main

from _tiny_space import TINY_SPACE  # tests/ is on sys.path



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_optuna_dashboard_serves_an_archlab_study(tmp_path):
    exe = shutil.which("optuna-dashboard") or pytest.fail("optuna-dashboard is in the dev extra: pip install -e '.[dev]'")
    (tmp_path / "tiny.py").write_text(TINY_SPACE)
    db = f"sqlite:///{tmp_path}/d.db"
    assert main(["search", "--quiet", "--space", str(tmp_path / "tiny.py"), "--sampler", "random", "--n-trials", "2",
                 "--storage", db, "--study", "dash", "--data", "scenes:n=16,val=8", "--epochs", "2",
                 "--batch-size", "8"]) == 0
    port = _free_port()
    server = subprocess.Popen([exe, db, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        studies = _get(f"http://127.0.0.1:{port}/api/studies", deadline)["study_summaries"]
        (summary,) = [s for s in studies if s["study_name"] == "dash"]
        attrs = {a["key"]: a["value"] for a in summary["user_attrs"]}
        assert attrs["space"].endswith("tiny.py") and json.loads(attrs["training"])["epochs"] == 2
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", deadline)
        assert len(detail["trials"]) == 2 and detail["has_intermediate_values"]
        for t in detail["trials"]:
            keys = {a["key"] for a in t["user_attrs"]}
            assert {"reward", "accuracy", "params", "macs", "memory", "rf", "arch"} <= keys
            assert [v["step"] for v in t["intermediate_values"]] == [1, 2]
    finally:
        server.terminate()
        server.wait(timeout=10)
