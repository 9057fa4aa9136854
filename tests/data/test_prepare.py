"""``medmm data prepare``: parallel, resumable, shardable preprocessing cache read by training."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from medmm.cli import cli
from medmm.config import load_workflow
from medmm.data.cache import PreparedCache
from medmm.data.dataset import build_dataset, load_cases
from medmm.data.prepare import parse_shard, prepare_cases, shard_cases
from medmm.data.synth import synthesize
from medmm.errors import MedmmConfigError

N_CASES = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six 16³ phantoms plus one corrupt and one missing volume, in one manifest."""
    root = tmp_path_factory.mktemp("prepare")
    manifest = synthesize(root / "synth", N_CASES, seed=0, size=16, fmt="nifti")
    with open(manifest, newline="") as fh:
        rows = [{**row, "image": str(manifest.parent / row["image"])} for row in csv.DictReader(fh)]
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b not a gzip stream")
    for case_id, image in (("zz-broken", str(root / "broken.nii.gz")), ("zz-missing", str(root / "nowhere.nii.gz"))):
        rows.append({**rows[0], "case_id": case_id, "patient_id": case_id, "image": image})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def _workflow(corpus: Path, cache: Path, **preprocessing) -> Path:
    doc = {"data": {"source": "manifest", "manifest": {"path": str(corpus / "manifest.csv")}},
           "preprocessing": {"spacing": None, "roi_size": [16, 16, 16], "crop_foreground": True,
                             "foreground_margin": 1, **preprocessing},
           "training": {"cache_dir": str(cache)}}
    path = cache.parent / f"workflow-{cache.name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _prepare(workflow: Path, *args: str):
    return CliRunner().invoke(cli, ["data", "prepare", str(workflow), "--quiet", *args])


def test_prepare_lists_invalid_cases_and_training_reads_identical_tensors(corpus, tmp_path):
    workflow = _workflow(corpus, tmp_path / "cache")
    result = _prepare(workflow, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert f"{N_CASES} prepared, 0 already cached, 2 failed" in result.output
    failures = [line for line in result.output.splitlines() if line.startswith("  - ")]
    assert [f.split(":")[0] for f in failures] == ["  - zz-broken", "  - zz-missing"]
    assert "broken.nii.gz" in failures[0] and "nowhere.nii.gz: no such file" in failures[1]
    assert "cases/s" in result.output and "MiB" in result.output

    cfg = load_workflow(workflow)
    cases = [c for c in load_cases(cfg.data, check_files=False) if not c.case_id.startswith("zz-")]
    cached = build_dataset(cases, cfg.data.labels, cfg.preprocessing, train=False, cache="memory",
                           cache_dir=cfg.training.cache_dir)
    fresh = build_dataset(cases, cfg.data.labels, cfg.preprocessing, train=False, cache="none")
    for k in range(len(cases)):
        assert torch.equal(cached[k]["image"], fresh[k]["image"])
        assert torch.equal(cached[k]["label"], fresh[k]["label"])
    summary = json.loads(next((tmp_path / "cache").glob("*/prepare-shard-1-of-1.json")).read_text())
    assert summary["prepared"] == N_CASES and len(summary["failures"]) == 2


def test_training_loader_reads_the_cache_not_the_volume(corpus, tmp_path):
    workflow = _workflow(corpus, tmp_path / "cache")
    cfg = load_workflow(workflow)
    case = load_cases(cfg.data, check_files=False)[0]
    cache = PreparedCache(cfg.training.cache_dir, cfg.preprocessing)
    marker = torch.full((1, 16, 16, 16), 0.25)
    cache.store(case.image, marker)  # an entry that on-the-fly preprocessing would never produce
    for mode in ("memory", "disk", "none"):
        ds = build_dataset([case], cfg.data.labels, cfg.preprocessing, train=False, cache=mode,
                           cache_dir=cfg.training.cache_dir)
        assert torch.equal(ds[0]["image"], marker), mode
    os.utime(case.image, ns=(1, 1))  # the source changed: the entry no longer applies
    try:
        ds = build_dataset([case], cfg.data.labels, cfg.preprocessing, train=False, cache="none",
                           cache_dir=cfg.training.cache_dir)
        assert not torch.equal(ds[0]["image"], marker)
    finally:
        os.utime(case.image)


def test_config_change_uses_a_fresh_cache_folder(corpus, tmp_path):
    first = _prepare(_workflow(corpus, tmp_path / "cache"))
    second = _prepare(_workflow(corpus, tmp_path / "cache", hu_window=[-1000, 400]))
    assert f"{N_CASES} prepared" in first.output and f"{N_CASES} prepared" in second.output
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2


def test_resume_after_a_killed_run(corpus, tmp_path):
    workflow = _workflow(corpus, tmp_path / "cache")
    cfg = load_workflow(workflow)
    cases = load_cases(cfg.data, check_files=False)
    done = prepare_cases(cases[:3], cfg.preprocessing, cfg.training.cache_dir)  # the run got this far
    assert done.prepared == 3
    cache = PreparedCache(cfg.training.cache_dir, cfg.preprocessing)
    torn = cache.entry(cases[1].image)
    torn.write_bytes(torn.read_bytes()[:-10])  # a damaged entry (e.g. disk trouble) must be redone
    assert not cache.has(cases[1].image) and cache.has(cases[0].image)
    (cache.folder / f".{cache.entry(cases[3].image).name}.123.tmp").write_bytes(b"half")  # killed mid-write
    result = _prepare(workflow, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert f"{N_CASES - 2} prepared, 2 already cached, 2 failed" in result.output
    assert cache.entries() == N_CASES and cache.load(cases[1].image) is not None


def test_shards_cover_every_case_exactly_once(corpus, tmp_path):
    workflow = _workflow(corpus, tmp_path / "cache")
    cases = load_cases(load_workflow(workflow).data, check_files=False)
    parts = [shard_cases(cases, (i, 3)) for i in (1, 2, 3)]
    ids = sorted(c.case_id for part in parts for c in part)
    assert ids == sorted(c.case_id for c in cases) and all(len(p) in (2, 3) for p in parts)
    assert shard_cases(list(reversed(cases)), (2, 3)) == parts[1]  # order of the input does not matter
    outputs = [_prepare(workflow, "--shard", f"{i}/3").output for i in (1, 2, 3)]
    assert sum(int(o.split("; ")[1].split()[0]) for o in outputs) == N_CASES  # prepared counts add up
    assert PreparedCache(tmp_path / "cache", load_workflow(workflow).preprocessing).entries() == N_CASES


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0"])
def test_bad_shard_is_a_config_error(text):
    with pytest.raises(MedmmConfigError, match="--shard"):
        parse_shard(text)


def test_cli_errors_are_one_line(corpus, tmp_path, capsys):
    from medmm.cli import main

    workflow = _workflow(corpus, tmp_path / "cache")
    with pytest.raises(SystemExit) as bad:
        main(["data", "prepare", str(workflow), "--shard", "9/3"])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and "--shard" in err and len(err.strip().splitlines()) == 1
    doc = yaml.safe_load(workflow.read_text())
    del doc["training"]["cache_dir"]
    workflow.write_text(yaml.safe_dump(doc))
    with pytest.raises(SystemExit) as missing:
        main(["data", "prepare", str(workflow)])
    err = capsys.readouterr().err
    assert missing.value.code == 2 and "training.cache_dir" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(corpus, tmp_path):
    """A real kill -9 of the CLI mid-run: the rerun completes and redoes nothing already written."""
    import signal
    import subprocess
    import sys
    import time

    workflow = _workflow(corpus, tmp_path / "cache")
    cache = PreparedCache(tmp_path / "cache", load_workflow(workflow).preprocessing)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "medmm", "data", "prepare", str(workflow), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while cache.entries() < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = cache.entries()
    assert 0 < before
    result = _prepare(workflow)
    assert result.exit_code == 0, result.output
    assert f"{N_CASES - before} prepared, {before} already cached, 2 failed" in result.output
    assert cache.entries() == N_CASES
