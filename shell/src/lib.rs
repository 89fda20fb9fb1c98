//! cairn-shell: the `cairn` JavaScript shell, with mongosh's vocabulary, over cairn-driver.
//!
//! - [`engine`]: the QuickJS engine (rquickjs), the natives the prelude calls, and how driver
//!   calls block the JavaScript thread on the tokio runtime (Ctrl-C interrupts them).
//! - `prelude.js`: `db`, collections, cursors, shell commands and BSON constructors, written in
//!   JavaScript; it builds MongoDB command documents and sends them as they are.
//! - [`convert`]: BSON <-> JavaScript values, keeping every BSON type across a round trip.
//! - [`inspect`]: printing in mongosh's format, with or without colour.
//! - [`input`]: shell commands (`use`, `show`, `it`, `exit`) and unfinished-input detection.
//! - [`repl`]: line editing, history, multi-line input, completion.
//! - [`embedded`]: the embedded default deployment that `cairn` without `--host` connects to.

pub mod convert;
pub mod embedded;
pub mod engine;
pub mod input;
pub mod inspect;
pub mod repl;

pub use engine::{EvalError, Interrupt, Output, Shell, ShellOptions};
