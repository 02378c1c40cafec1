"""lstm-bench: run one LSTM workload across deep-learning frameworks in containers and compare them."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

# The project root holds images/ and workloads/; a checkout is the supported layout (pip install -e .).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LABEL_PREFIX = "lstm-bench"
