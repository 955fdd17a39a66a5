"""The shipped space families; importing this package registers their spaces."""

from search_spaces import mobile_dit, mobile_unet  # noqa: F401
