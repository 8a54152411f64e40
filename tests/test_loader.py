"""indexer/loader.py: during an index run the model gets the cores the decode workers leave; the setting is
restored after."""
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
