"""The pass: what to do per entry (plan), the one driver (reconcile) and what a pull waits for
(slots, room, disk, deadline); pins kept by one owner among others (pins, claims); this node's
moment in a rollout."""
