"""Prefect flows: one per DVC stage, thin wrappers that call the library.

Importing this package sets offline defaults for Prefect (a project-local PREFECT_HOME, no
analytics) unless the environment already says otherwise, so `dvc repro` works the same
whether or not it was started from the Makefile.
"""

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
for _key, _value in {
    "PREFECT_HOME": str(_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_ENABLED": "false",
    # each stage's flow starts a temporary server; on a busy 2-core machine (two experiments at
    # once, a training beside) it can take longer than Prefect's default 20 s to answer
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_key, _value)
