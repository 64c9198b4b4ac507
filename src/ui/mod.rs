//! Output: tables, progress, modes.
