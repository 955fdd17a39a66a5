"""The shipped space families; importing this package registers their spaces."""

import nas  # noqa: F401  (first: quiets third-party import noise before diffusers loads)
from search_spaces import mobile_dit, mobile_unet  # noqa: F401
