"""Static checks of the framework Dockerfiles; the code is the package orchestrator.imagecheck.

Run: python -m orchestrator.dockerfile_check [--offline] [--root DIR] [framework ...]
"""

from __future__ import annotations

from orchestrator.imagecheck import main

if __name__ == "__main__":
    raise SystemExit(main())
