//! Remote side: SSH master connections, rsync transfer, remote execution.
