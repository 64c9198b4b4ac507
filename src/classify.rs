//! Which commands can be offloaded to a worker, and their kind.
