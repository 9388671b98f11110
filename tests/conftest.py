import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # the CI machine has 2 cores; keep every test on them without oversubscription
    torch.set_num_threads(2)
    yield


TINY = [
    "data.image_size=32",
    "data.synthetic_train=16",
    "data.synthetic_test=8",
    "model.arch=resnet18",
    "model.num_parts=4",
    "model.features=texture",
    "train.batch_size=2",
    "train.log_every=1",
    "train.vis_every=1000",
    "log.progress=false",
    "eval.batch_size=4",
]


@pytest.fixture(scope="session")
def tiny_args():
    """The TINY overrides without ``out=``, for module- and session-scoped fixtures."""
    return list(TINY)


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides for a seconds-long synthetic run in tmp_path/run."""
    return [*TINY, f"out={tmp_path / 'run'}"]
