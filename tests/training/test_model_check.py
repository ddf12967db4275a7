"""A user model factory is checked with a training step on a small batch (issue 20), before any
file is written, and the model handed back is left exactly as the factory made it."""

import sys

import pytest
import torch

from cifarlens.errors import CifarlensError
from cifarlens.training.models import build_model

MODULE = '''
import torch
from torch import nn

class FirstOnly(nn.Module):  # right for one image, wrong for a batch
    def __init__(self, k):
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3072, k))
    def forward(self, x):
        return self.head(x[:1])

class NoParams(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k
    def forward(self, x):
        return x.flatten(1)[:, :self.k]

class IntLogits(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3072, k))
    def forward(self, x):
        return self.head(x).round().long()

class EvalOnly(nn.Module):  # breaks only in training mode
    def __init__(self, k):
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3072, k))
    def forward(self, x):
        if self.training:
            raise RuntimeError("training mode is not supported")
        return self.head(x)

class Detached(nn.Module):  # no gradient reaches the parameters
    def __init__(self, k):
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3072, k))
    def forward(self, x):
        return self.head(x).detach()

def first_only(k): return FirstOnly(k)
def no_params(k): return NoParams(k)
def int_logits(k): return IntLogits(k)
def eval_only(k): return EvalOnly(k)
def detached(k): return Detached(k)

def good(k):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, k))
'''


@pytest.fixture
def zoo(tmp_path, monkeypatch, request):
    name = f"checkzoo_{abs(hash(request.node.nodeid))}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize("factory,msg", [
    ("first_only", r"training step on a 2x3x32x32 batch gave output \(1, 5\), expected \(2, 5\)"),
    ("no_params", "has no trainable parameters"),
    ("int_logits", "logits are torch.int64, not floating point"),
    ("eval_only", "forward pass of a training step .* RuntimeError: training mode is not"),
    ("detached", "output does not depend on its parameters"),
])
def test_a_factory_that_cannot_train_is_one_line(zoo, factory, msg):
    with pytest.raises(CifarlensError, match=msg) as e:
        build_model(f"{zoo}:{factory}", 5)
    assert "\n" not in str(e.value)


def test_the_check_changes_neither_the_model_nor_the_rng(zoo):
    torch.manual_seed(123)
    __import__(zoo).good(5)  # the factory's own initialisation draws from the stream
    want = torch.rand(3)
    torch.manual_seed(7)
    fresh = __import__(zoo).good(5)
    torch.manual_seed(7)
    m = build_model(f"{zoo}:good", 5)
    for (k, a), b in zip(fresh.state_dict().items(), m.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # BN running statistics included
    assert all(p.grad is None for p in m.parameters())
    torch.manual_seed(123)
    build_model(f"{zoo}:good", 5)
    assert torch.equal(torch.rand(3), want)  # the seeded stream was not advanced
