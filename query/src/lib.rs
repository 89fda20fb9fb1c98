//! cairn-query (under construction).
