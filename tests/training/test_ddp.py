"""DDP: two gloo processes on CPU train the tiny workflow and end with identical weights/metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml
from training_helpers import tiny_workflow

WORKER = textwrap.dedent('''
    import hashlib, json, os, sys
    import torch
    torch.set_num_threads(1)
    import yaml
    from medmm.training import train

    wf = yaml.safe_load(open(sys.argv[1]))
    run = train(wf, run_dir=sys.argv[2], device="cpu", verbose=False)
    digest = hashlib.sha256()
    for key, value in sorted(run.model.state_dict().items()):
        digest.update(key.encode()); digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    out = {"weights": digest.hexdigest(), "metrics": run.metrics, "world": int(os.environ["WORLD_SIZE"])}
    with open(os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.json"), "w") as fh:
        json.dump(out, fh)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_agree(tiny_manifest, tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump(tiny_workflow(tiny_manifest, **{"training.epochs": 2})))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(worker), str(wf), str(tmp_path / "run"), str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["metrics"] == ranks[1]["metrics"] and len(ranks[0]["metrics"]) == 2
    written = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert written == ranks[0]["metrics"]  # rank 0 wrote the run directory
