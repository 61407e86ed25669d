import socket
import sys

import pytest
import torch

from genprior.data import RealData
from genprior.synset import SyntheticSet


@pytest.fixture(autouse=True)
def _threads():
    """Tests use tiny tensors: one thread avoids OpenMP spinning when the machine is shared."""
    torch.set_num_threads(1)


def make_synset(ipc=2, num_classes=3, channels=1, resolution=8, soft=False, seed=0, dataset="digits"):
    g = torch.Generator().manual_seed(seed)
    n = ipc * num_classes
    mean = (0.5,) * channels
    std = (0.25,) * channels
    return SyntheticSet(
        images=torch.randn(n, channels, resolution, resolution, generator=g),
        labels=torch.arange(num_classes).repeat_interleave(ipc),
        soft_labels=torch.softmax(torch.randn(n, num_classes, generator=g), 1) if soft else None,
        mean=mean,
        std=std,
        dataset=dataset,
        class_names=[f"class {c}" for c in range(num_classes)],
        method="test",
        config={"lr": 0.1, "nested": {"a": [1, 2]}},
    )


def subset(data: RealData, per_class: int) -> RealData:
    """The first ``per_class`` images of every class: cheap real data for tests."""
    idx = torch.cat([data.indices_of_class(c)[:per_class] for c in range(data.num_classes)])
    return RealData(data.name, data.split, data.images[idx], data.labels[idx], data.mean, data.std, data.class_names)


def accelerate_launch(num_processes: int = 2) -> list[str]:
    """The ``accelerate launch`` command line for CPU processes joined with gloo, on a free port:
    test workers running side by side (``pytest -n``) must not meet on accelerate's default port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --multi_gpu starts the processes through torchrun; genprior joins them with gloo on a CPU
    # (accelerate's --cpu flag would start one process only)
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "genprior"]
