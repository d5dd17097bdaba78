import os
import sys
import warnings

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # examples.models

warnings.filterwarnings("ignore", category=FutureWarning)
torch.manual_seed(0)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
