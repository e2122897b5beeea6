"""What calibration produces: the encoded reference and the thresholds, stored as bytes.

A :class:`Calibration` is computed once per (config, reference) in a separate process and then
loaded by every worker and after every restart. Loading never recalibrates: the thresholds are
stored bit-exact (see :mod:`.codec`), and each backend rebuilds its detectors from them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from . import codec
from .config import DriftConfig
from .encoding import reference_digest

FORMAT = 1


@dataclass
class Calibration:
    """A calibrated drift engine for one model version.

    ``reference`` holds the encoded reference columns (see :mod:`.encoding`), ``categories``
    the categories of categorical columns, ``arrays`` and ``values`` the backend's thresholds
    and tables (arrays bit-exact, values JSON), ``reference_digest`` the sha256 of the encoded
    reference content.
    """

    config: DriftConfig
    reference: dict[str, npt.NDArray[Any]]
    categories: dict[str, tuple[str, ...]]
    reference_digest: str
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_reference(
        cls,
        config: DriftConfig,
        cols: dict[str, npt.NDArray[Any]],
        categories: dict[str, tuple[str, ...]],
        arrays: dict[str, npt.NDArray[Any]],
        values: dict[str, Any],
    ) -> Calibration:
        """A backend's calibration of the encoded reference ``cols`` (its digest computed here)."""
        return cls(
            config=config,
            reference=cols,
            categories=categories,
            reference_digest=reference_digest(cols),
            arrays=arrays,
            values=values,
        )

    @property
    def key(self) -> str:
        """sha256 of the config and the reference content: names this calibration."""
        h = hashlib.sha256()
        h.update(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        h.update(self.reference_digest.encode())
        return h.hexdigest()

    def to_bytes(self) -> bytes:
        """Serialise (deterministic bytes; floats exact)."""
        meta = {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "categories": {k: list(v) for k, v in self.categories.items()},
            "reference_digest": self.reference_digest,
            "values": self.values,
        }
        arrays = {f"ref/{k}": v for k, v in self.reference.items()}
        arrays.update({f"arr/{k}": v for k, v in self.arrays.items()})
        return codec.pack(meta, arrays)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Calibration:
        """Load a calibration written by :meth:`to_bytes` (no recalibration)."""
        meta, arrays = codec.unpack(blob)
        if meta.get("format") != FORMAT:
            raise ValueError(f"unsupported calibration format {meta.get('format')!r}")
        return cls(
            config=DriftConfig.from_dict(meta["config"]),
            reference={k[4:]: v for k, v in arrays.items() if k.startswith("ref/")},
            categories={k: tuple(v) for k, v in meta["categories"].items()},
            reference_digest=meta["reference_digest"],
            arrays={k[4:]: v for k, v in arrays.items() if k.startswith("arr/")},
            values=meta["values"],
        )

    def same_as(self, other: Calibration) -> bool:
        """Equal content, arrays compared bit for bit."""
        if (
            self.key != other.key
            or self.values != other.values
            or self.categories != other.categories
        ):
            return False
        for mine, theirs in ((self.reference, other.reference), (self.arrays, other.arrays)):
            if mine.keys() != theirs.keys():
                return False
            for k in mine:
                a, b = mine[k], theirs[k]
                if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                    return False
        return True
