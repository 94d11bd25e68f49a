"""``python -m server`` and its commands.

Every command exits with one of these codes: 0 done, 1 the work ran but
something failed, 2 a usage or configuration error (the message names the
setting and the fix).
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
