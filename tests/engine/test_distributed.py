"""DistributedDataParallel under torchrun: 2 CPU processes with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import tlkit
    from tlkit.datasets import Domain, DomainPair

    out = sys.argv[1]
    sys.path.insert(0, sys.argv[2])
    from conftest import pattern_domain
    dom = pattern_domain(192, seed=0, name="patterns")
    train, test = dom.split(0.25)
    run = tlkit.fit(DomainPair(train, test), "small_cnn", epochs=6, freeze_epochs=1,
                    batch_size=8, lr=3e-3, progress=False, device="cpu",
                    checkpoint_dir=os.path.join(out, "ckpt"))
    rank = dist.get_rank()
    flat = torch.cat([p.detach().flatten() for p in run.model.parameters()])
    torch.save(flat, os.path.join(out, f"weights{rank}.pt"))
    with open(os.path.join(out, f"history{rank}.json"), "w") as f:
        json.dump({"history": run.history, "world": dist.get_world_size()}, f)
    dist.destroy_process_group()
    """
)


@pytest.mark.distributed
def test_ddp_two_cpu_processes_train_in_lockstep(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29517",
            str(script),
            str(tmp_path),
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "weights0.pt")
    w1 = torch.load(tmp_path / "weights1.pt")
    assert torch.equal(w0, w1)  # gradients were averaged: both ranks hold the same model
    h0 = json.loads((tmp_path / "history0.json").read_text())
    assert h0["world"] == 2
    # 144 training samples, 2 ranks x batch 8 -> 9 steps an epoch (DistributedSampler shards)
    assert [row["step"] for row in h0["history"]] == [9, 18, 27, 36, 45, 54]
    assert h0["history"][-1]["source_accuracy"] > 0.5
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert ckpt["state"]["step"] == 54


LAZY_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import tlkit
    from tlkit.datasets import DomainPair, from_folder, from_shards

    out, photos, shards = sys.argv[1], sys.argv[2], sys.argv[3]
    results = {}
    for kind, domain in (("folder", from_folder(photos)), ("shards", from_shards(shards))):
        train, test = domain.split(0.25, seed=0)
        run = tlkit.fit(DomainPair(train, test), "small_cnn", epochs=10, mode="full",
                        image_size=32, batch_size=8, lr=3e-3, progress=False, device="cpu",
                        num_workers=1)
        flat = torch.cat([p.detach().flatten() for p in run.model.parameters()])
        torch.save(flat, os.path.join(out, f"{kind}-weights{dist.get_rank()}.pt"))
        results[kind] = run.history
    with open(os.path.join(out, f"lazy{dist.get_rank()}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()
    """
)


@pytest.mark.distributed
def test_ddp_over_a_lazy_folder_and_over_shards(tmp_path):
    from conftest import thumbnail_photos

    from tlkit.datasets import pack

    photos = thumbnail_photos(tmp_path / "photos").root
    shards = pack(photos, tmp_path / "shards", shard_size=20, progress=False)
    script = tmp_path / "train_lazy.py"
    script.write_text(LAZY_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29519", str(script), str(tmp_path), str(photos), shards],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    h0 = json.loads((tmp_path / "lazy0.json").read_text())
    for kind in ("folder", "shards"):
        w0 = torch.load(tmp_path / f"{kind}-weights0.pt")
        w1 = torch.load(tmp_path / f"{kind}-weights1.pt")
        assert torch.equal(w0, w1), kind  # one model: gradients averaged across the ranks
        # 72 training photos, 2 ranks: each rank reads its 36 in batches of 8, 8, 8, 8 and 4
        assert [row["step"] for row in h0[kind]] == list(range(5, 51, 5)), kind
        assert h0[kind][-1]["source_accuracy"] > 0.5, (kind, h0[kind])
