"""The quantizer's one exception type: bad input or an unmet precondition, with a message naming it."""


class QuantizeError(Exception):
    """A quantization run cannot proceed (bad calibration data, bundle, option or target constraint)."""
