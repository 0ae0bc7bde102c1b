"""The quantizer's one exception type: bad input or an unmet precondition, with a message naming it."""
from edgeclip.errors import EdgeclipError


class QuantizeError(EdgeclipError):
    """A quantization run cannot proceed (bad calibration data, bundle, option or target constraint)."""
