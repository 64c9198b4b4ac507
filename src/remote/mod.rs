//! Remote side: SSH, transfer, execution.
