"""``python -m flywheel_serving``: run the BentoML server with the settings' host, port, workers."""

from __future__ import annotations

import os
import sys

from .settings import ServingSettings


def main() -> None:
    """Replace this process with ``bentoml serve`` (signals then reach BentoML's arbiter)."""
    settings = ServingSettings()
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    args = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "flywheel_serving.service:FlywheelServing",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
    ]
    os.execv(sys.executable, args)  # noqa: S606 -- this interpreter, a fixed argument list


main()
