"""GPU smoke tests (run when a CUDA device is lent; skipped cleanly otherwise).

* an AMP training step of ``workflows/ct_chest.yaml`` at full size (224 × 224 × 160);
* sliding-window inference with the windows on the GPU and the stitched map in host memory,
  equal to the all-CPU map;
* the collectives of `medmm.training.distributed` (NCCL for CUDA tensors, gloo for the run-dir
  broadcast) in a one-rank ``torchrun`` group.

Each prints its wall time (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from scale_helpers import WORKFLOW, overrides, timed_cli

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_amp_step_then_sliding_window_on_gpu_with_cpu_stitching(ctrate, prepared):
    """One test (the stages share the run), so ``pytest -n 2`` never trains twice."""
    from medmm.data.ctrate import volume_path
    from medmm.data.synth.ctrate_layout import ctrate_names
    from medmm.data.transforms import preprocess_volume
    from medmm.inference import load_model
    from medmm.inference.sliding import compute_feature_map
    from medmm.io import load_volume

    run_dir = ctrate["root"] / "run-gpu"
    timed_cli("GPU train 1 step (AMP)", ["train", str(WORKFLOW), *overrides(ctrate, **{"training.amp": True}),
                                         "--device", "cuda", "--quiet", "--run-dir", str(run_dir)])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and all(v == v for v in metrics[0].values() if isinstance(v, float))  # no NaN

    predictor = load_model(run_dir, device="cuda")
    model, settings = predictor.model.eval(), predictor.inferer
    image = preprocess_volume(load_volume(volume_path(ctrate["volumes_dir"], ctrate_names(2)[1])),
                              predictor.preprocessing)[None].as_tensor()
    assert any(s > r for s, r in zip(image.shape[2:], settings.roi_size))  # the volume needs several windows
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # full fp32 on the GPU, so the comparison with the CPU is tight
    try:
        with torch.no_grad():
            torch.cuda.synchronize()
            start = time.perf_counter()
            stitched = compute_feature_map(model.feature_map, image, settings, sw_device="cuda", device="cpu")
            torch.cuda.synchronize()
            gpu_s = time.perf_counter() - start
            model.to("cpu")
            start = time.perf_counter()
            reference = compute_feature_map(model.feature_map, image, settings, sw_device="cpu", device="cpu")
            cpu_s = time.perf_counter() - start
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    print(f"\n[gpu smoke] sliding window {tuple(image.shape[2:])}: GPU windows + CPU stitching {gpu_s:.2f} s, "
          f"all CPU {cpu_s:.2f} s")
    assert stitched.device.type == "cpu" and stitched.shape == reference.shape
    assert torch.allclose(stitched, reference, rtol=1e-3, atol=1e-3)


WORKER = textwrap.dedent('''
    import json, sys, time
    import torch
    import torch.distributed as dist
    from medmm.training import distributed as d

    class OneRank(d.DistInfo):
        enabled = property(lambda self: True)  # exercise the collectives although the world is 1

    start = time.perf_counter()
    dist.init_process_group(d.CUDA_BACKEND, rank=0, world_size=1)  # as d.setup does on CUDA
    torch.cuda.set_device(0)
    info = OneRank(0, 1, 0, True)
    model = torch.nn.Linear(8, 2).cuda()
    before = [p.detach().clone() for p in model.parameters()]
    d.broadcast_parameters(model, info)
    model(torch.ones(4, 8, device="cuda")).sum().backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    d.average_gradients(list(model.parameters()), info)
    out = {
        "params_kept": all(torch.equal(a, p) for a, p in zip(before, model.parameters())),
        "grads_kept": all(torch.allclose(g, p.grad) for g, p in zip(grads, model.parameters())),
        "scalars": d.mean_scalars({"loss": 2.5}, info, torch.device("cuda")),
        "text": d.broadcast_text("rank0-run-dir", info),
        "backend": dist.get_backend(),
        "seconds": time.perf_counter() - start,
    }
    d.teardown(info)
    json.dump(out, open(sys.argv[1], "w"))
''')


def test_nccl_collectives_with_one_rank(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_addr=127.0.0.1",
           f"--master_port={port}", str(worker), str(tmp_path / "out.json")]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    print(f"\n[gpu smoke] NCCL one-rank collectives: {out['seconds']:.2f} s")
    assert "nccl" in out["backend"] and out["params_kept"] and out["grads_kept"]
    assert out["scalars"] == {"loss": 2.5} and out["text"] == "rank0-run-dir"
