//! cairn-locking (under construction).
