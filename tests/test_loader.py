"""indexer/loader.py: during an index run the model gets the cores the decode workers leave; the setting is
restored after; decode workers forked with none of this process's garbage to collect."""
import gc
import os

import torch

from imgsearch.indexer import loader


def test_model_threads_leave_cores_to_workers(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        monkeypatch.setattr(loader.os, "cpu_count", lambda: 4)
        with loader.model_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 4
        with loader.model_threads(4):
            assert torch.get_num_threads() == 1          # never below one
        with loader.model_threads(0):                     # no workers (or CUDA): unchanged
            assert torch.get_num_threads() == 4
        monkeypatch.setattr(loader.os, "cpu_count", lambda: 16)
        with loader.model_threads(2):
            assert torch.get_num_threads() == 4          # never above what was set
    finally:
        torch.set_num_threads(before)


class _Held:
    """Garbage in a reference cycle whose destructor records the process it ran in."""

    def __init__(self, log):
        self.log, self.me = log, self

    def __del__(self):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")


def test_forked_decode_workers_never_collect_the_parents_garbage(tmp_path, monkeypatch):
    """Garbage of this process at the fork (an onnxruntime session in a cycle hung a forked worker for good: its
    destructor waited for threads the child does not have) is collected here, not in a worker."""
    from PIL import Image

    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.jpg"
        Image.new("RGB", (40, 30), (i * 60, 90, 200)).save(p)
        paths.append(str(p))
    log = tmp_path / "destroyed.txt"
    init = loader.worker_init

    def init_then_collect(worker_id):   # a collection in the worker, as its allocations would trigger one
        init(worker_id)
        gc.collect()
    monkeypatch.setattr(loader, "worker_init", init_then_collect)
    gc.disable()
    try:
        _Held(log)                         # unreachable now, collected by nobody yet
        got = list(loader.batches(paths, 64, "squash", batch_size=2, workers=1, timeout=60))
    finally:
        gc.enable()
    assert sum(len(b[1]) if isinstance(b, (tuple, list)) else 1 for b in got) >= 1
    assert log.read_text().split() == [str(os.getpid())]   # destroyed here, once, never in the worker
    assert gc.get_freeze_count() == 0                        # and nothing left frozen
