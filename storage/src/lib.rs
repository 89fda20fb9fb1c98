//! cairn-storage (under construction).
