//! cairn-driver (under construction).
