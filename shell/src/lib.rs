//! cairn-shell (under construction).
