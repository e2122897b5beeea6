"""Model artifacts: saved with skops (no arbitrary code runs on load), hash-checked first.

Needs the ``models`` extra (``flywheel-shared[models]``).
"""

from __future__ import annotations

from typing import Any

from .integrity import check_sha256

FORMAT = "skops"
#: Types scikit-learn's own estimators need beyond skops' defaults (gradient boosting).
SKLEARN_TRUSTED = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
    "functools.partial",
]


class UntrustedArtifact(ValueError):
    """An artifact's hash does not match, or it holds types we do not trust."""


def dump_model(model: Any) -> bytes:
    """Serialise a scikit-learn estimator with skops."""
    import skops.io as sio

    data: bytes = sio.dumps(model)
    return data


def load_model(data: bytes, sha256: str, *, extra_trusted: list[str] | None = None) -> Any:
    """Load an estimator after checking ``sha256``; refuse types skops does not trust.

    skops only rebuilds known-safe types; anything else must be listed in ``extra_trusted``
    (fully qualified names), so a tampered artifact cannot run code on load.
    """
    import skops.io as sio

    check_sha256(
        data,
        sha256,
        lambda actual: UntrustedArtifact(
            f"artifact hash mismatch: expected {sha256}, got {actual}"
        ),
    )
    trusted = [*SKLEARN_TRUSTED, *(extra_trusted or [])]
    unknown = [t for t in sio.get_untrusted_types(data=data) if t not in trusted]
    if unknown:
        raise UntrustedArtifact(f"artifact holds untrusted types: {', '.join(unknown[:10])}")
    return sio.loads(data, trusted=sio.get_untrusted_types(data=data))
