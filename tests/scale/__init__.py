"""Tests of sharded runs on forced CPU devices (helpers shared by the test files)."""

import json
import os
import subprocess
import sys


def run_on_devices(script: str, *args: str, devices: int = 8) -> dict:
    """Run ``python -c script *args`` with ``devices`` forced host devices (the count is fixed
    when JAX starts, hence a subprocess) and return the JSON of its ``RESULT`` line."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                        + f" --xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                       env=env, timeout=600)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    assert r.returncode == 0 and line, r.stderr[-3000:]
    return json.loads(line[0][len("RESULT"):])
