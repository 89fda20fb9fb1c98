//! Shared setup of the shell tests: the driver's test double of cairnd on a tokio runtime, and a
//! shell whose output is collected in memory.

#![allow(dead_code)]

#[path = "../../../driver/tests/support/double.rs"]
pub mod double;

use cairn_shell::{Interrupt, Output, Shell, ShellOptions};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

pub struct Harness {
    pub shell: Shell,
    pub output: Rc<RefCell<String>>,
    pub interrupt: Arc<Interrupt>,
    pub server: double::Server,
    pub runtime: tokio::runtime::Runtime,
}

impl Harness {
    pub fn start() -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(double::Server::start());
        let client = runtime
            .block_on(cairn_driver::Client::connect(&server.uri()))
            .unwrap();
        let output = Rc::new(RefCell::new(String::new()));
        let interrupt = Interrupt::new();
        let shell = Shell::new(
            client,
            runtime.handle().clone(),
            interrupt.clone(),
            ShellOptions {
                colour: false,
                output: Output::Buffer(output.clone()),
            },
        )
        .unwrap();
        Harness {
            shell,
            output,
            interrupt,
            server,
            runtime,
        }
    }

    /// Runs REPL input and returns what the REPL would print (or the error text).
    pub fn run(&self, input: &str) -> String {
        match self.shell.run_input(input) {
            Ok(Some(text)) => text,
            Ok(None) => String::new(),
            Err(error) => format!("ERROR {error}"),
        }
    }

    /// Runs input that must succeed.
    pub fn ok(&self, input: &str) -> String {
        let text = self.run(input);
        assert!(!text.starts_with("ERROR"), "{input}: {text}");
        text
    }

    /// The last command the server received whose first key is `name`.
    pub fn last(&self, name: &str) -> bson::Document {
        self.server
            .double
            .commands_named(name)
            .pop()
            .unwrap_or_else(|| panic!("no {name} command was sent"))
    }

    pub fn take_output(&self) -> String {
        std::mem::take(&mut *self.output.borrow_mut())
    }
}
