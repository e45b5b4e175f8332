"""kservice: the Kubernetes Service data plane, end to end.

The public API is re-exported here; the work lives in the subpackages
(``kservice.api``, ``kservice.control``, ...).
"""

from kservice._version import __version__
from kservice.errors import (
    AllocationError,
    AlreadyAllocatedError,
    FieldError,
    KServiceError,
    ManifestError,
    NotFoundError,
    NotInRangeError,
    RangeFullError,
    ValidationError,
)

__all__ = [
    "AllocationError",
    "AlreadyAllocatedError",
    "FieldError",
    "KServiceError",
    "ManifestError",
    "NotFoundError",
    "NotInRangeError",
    "RangeFullError",
    "ValidationError",
    "__version__",
]
