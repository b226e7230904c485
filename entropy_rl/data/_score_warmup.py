"""Imported last by the reward workers' fork server: warms the checkers.

math-verify's first parse in a process costs ~0.4 s of one-off set-up
(grammar tables, lazy imports); done here once, every worker forked from the
server starts warm, so a new worker's first response is not charged for it.
`gc.freeze` then keeps the workers' garbage collector off the inherited
objects (fewer copy-on-write page faults).
"""

import gc

from entropy_rl.data import bounded

try:
  bounded.warm_up()
except Exception:  # pylint: disable=broad-except
  pass  # Workers then warm up themselves (or pay on first use).
gc.freeze()
