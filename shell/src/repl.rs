//! The interactive loop: rustyline line editing, saved history (`~/.cairn_shell_history`),
//! multi-line input for unfinished expressions, tab completion, Ctrl-C and Ctrl-D.
//!
//! At the prompt, Ctrl-C clears the line (twice on an empty line leaves, as in mongosh) and
//! Ctrl-D leaves. While a command runs, Ctrl-C interrupts it (see `engine`).

use crate::engine::{EvalError, Shell};
use crate::input::is_complete;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Config, Context, Editor, Helper};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Methods offered after `db.`.
pub const DATABASE_METHODS: &[&str] = &[
    "adminCommand",
    "aggregate",
    "createCollection",
    "currentOp",
    "dropDatabase",
    "fsyncLock",
    "fsyncUnlock",
    "getCollection",
    "getCollectionInfos",
    "getCollectionNames",
    "getMongo",
    "getName",
    "getSiblingDB",
    "hello",
    "help",
    "hostInfo",
    "killOp",
    "lockInfo",
    "runCommand",
    "serverStatus",
    "stats",
    "version",
];

/// Methods offered after `db.<collection>.`.
pub const COLLECTION_METHODS: &[&str] = &[
    "aggregate",
    "count",
    "countDocuments",
    "createIndex",
    "createIndexes",
    "deleteMany",
    "deleteOne",
    "distinct",
    "drop",
    "dropIndex",
    "dropIndexes",
    "estimatedDocumentCount",
    "find",
    "findOne",
    "findOneAndDelete",
    "findOneAndReplace",
    "findOneAndUpdate",
    "getFullName",
    "getIndexes",
    "getName",
    "insertMany",
    "insertOne",
    "renameCollection",
    "replaceOne",
    "stats",
    "updateMany",
    "updateOne",
];

/// Methods offered after `).` (cursors).
pub const CURSOR_METHODS: &[&str] = &[
    "allowDiskUse",
    "batchSize",
    "close",
    "collation",
    "comment",
    "count",
    "explain",
    "forEach",
    "hasNext",
    "hint",
    "isExhausted",
    "itcount",
    "limit",
    "map",
    "maxTimeMS",
    "next",
    "pretty",
    "project",
    "projection",
    "size",
    "skip",
    "sort",
    "toArray",
    "tryNext",
];

/// Where completion gets names from.
pub trait CompletionSource {
    fn collection_names(&self) -> Vec<String>;
    fn global_names(&self) -> Vec<String>;
}

/// Completion of the text before the cursor: the start of the replaced word and the candidates.
pub fn complete(before_cursor: &str, source: &dyn CompletionSource) -> (usize, Vec<String>) {
    let token_start = before_cursor
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || matches!(c, '_' | '$' | '.'))
        .last()
        .map_or(before_cursor.len(), |(index, _)| index);
    let token = &before_cursor[token_start..];
    let head = before_cursor[..token_start].trim_start();
    let filter = |names: Vec<String>, prefix: &str, partial: &str| -> Vec<String> {
        let mut out: Vec<String> = names
            .into_iter()
            .filter(|name| name.starts_with(partial))
            .map(|name| format!("{prefix}{name}"))
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let strings = |names: &[&str]| {
        names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>()
    };
    if head == "show" || head == "show " || before_cursor.trim_start().starts_with("show ") {
        return (
            token_start,
            filter(
                strings(&["collections", "databases", "dbs", "tables"]),
                "",
                token,
            ),
        );
    }
    if let Some(rest) = token.strip_prefix("db.") {
        return match rest.rsplit_once('.') {
            None => {
                let names: Vec<String> = source
                    .collection_names()
                    .into_iter()
                    .filter(|name| name.chars().all(|c| c.is_alphanumeric() || c == '_'))
                    .chain(strings(DATABASE_METHODS))
                    .collect();
                (token_start, filter(names, "db.", rest))
            }
            Some((collection, partial)) => (
                token_start,
                filter(
                    strings(COLLECTION_METHODS),
                    &format!("db.{collection}."),
                    partial,
                ),
            ),
        };
    }
    if let Some(partial) = token.strip_prefix('.')
        && before_cursor[..token_start].trim_end().ends_with(')')
    {
        return (token_start, filter(strings(CURSOR_METHODS), ".", partial));
    }
    if token.is_empty() || token.contains('.') {
        return (token_start, Vec::new());
    }
    let mut globals = source.global_names();
    globals.extend(strings(&["use", "show", "it", "exit"]));
    (token_start, filter(globals, "", token))
}

/// Collection names, cached for a few seconds so that completion stays quick.
struct CachedNames {
    database: String,
    names: Vec<String>,
    fetched: Instant,
}

const COLLECTION_NAMES_CACHE: Duration = Duration::from_secs(5);
const COLLECTION_NAMES_TIMEOUT: Duration = Duration::from_millis(800);

struct ShellSource<'a> {
    shell: &'a Shell,
    cache: &'a RefCell<Option<CachedNames>>,
}

impl CompletionSource for ShellSource<'_> {
    fn collection_names(&self) -> Vec<String> {
        let database = self.shell.current_database();
        let mut cache = self.cache.borrow_mut();
        if let Some(cached) = cache.as_ref()
            && cached.database == database
            && cached.fetched.elapsed() < COLLECTION_NAMES_CACHE
        {
            return cached.names.clone();
        }
        let names = self.shell.collection_names(COLLECTION_NAMES_TIMEOUT);
        *cache = Some(CachedNames {
            database,
            names: names.clone(),
            fetched: Instant::now(),
        });
        names
    }

    fn global_names(&self) -> Vec<String> {
        self.shell.global_names()
    }
}

struct ShellHelper {
    shell: Rc<Shell>,
    cache: RefCell<Option<CachedNames>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let source = ShellSource {
            shell: &self.shell,
            cache: &self.cache,
        };
        let (start, candidates) = complete(&line[..pos], &source);
        Ok((
            start,
            candidates
                .into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {
    fn validate(&self, context: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if is_complete(context.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Helper for ShellHelper {}

/// The history file: `~/.cairn_shell_history`.
pub fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".cairn_shell_history"))
}

/// History entries kept.
pub const HISTORY_ENTRIES_MAX: usize = 10_000;

/// Runs the REPL until exit; returns the exit code.
pub fn run(shell: Rc<Shell>, colour: bool) -> i32 {
    let config = Config::builder()
        .auto_add_history(false)
        .completion_type(rustyline::CompletionType::List)
        .max_history_size(HISTORY_ENTRIES_MAX)
        .and_then(|builder| builder.history_ignore_dups(true))
        .map(|builder| builder.build())
        .unwrap_or_default();
    let mut editor: Editor<ShellHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(error) => {
            eprintln!("cannot start line editing: {error}");
            return 1;
        }
    };
    editor.set_helper(Some(ShellHelper {
        shell: shell.clone(),
        cache: RefCell::new(None),
    }));
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let mut pending = String::new();
    let mut interrupted_once = false;
    let code = loop {
        let prompt = if pending.is_empty() {
            format!("{}> ", shell.current_database())
        } else {
            "... ".to_string()
        };
        match editor.readline(&prompt) {
            Ok(line) => {
                interrupted_once = false;
                if !pending.is_empty() {
                    pending.push('\n');
                }
                pending.push_str(&line);
                if !is_complete(&pending) {
                    continue;
                }
                let input = std::mem::take(&mut pending);
                if input.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(input.as_str());
                if let Some(path) = &history {
                    let _ = editor.save_history(path);
                }
                match shell.run_input(&input) {
                    Ok(Some(text)) => shell.print(&text),
                    Ok(None) => {}
                    Err(EvalError::Exit(code)) => break code,
                    Err(EvalError::Interrupted) => {
                        eprintln!("{}", paint_error(colour, "Stopping execution..."))
                    }
                    Err(EvalError::Exception(message)) => {
                        eprintln!("{}", paint_error(colour, &message))
                    }
                }
            }
            Err(ReadlineError::Interrupted) => {
                if pending.is_empty() && interrupted_once {
                    break 0;
                }
                if pending.is_empty() {
                    eprintln!("(To exit, press Ctrl+C again or Ctrl+D or type exit)");
                    interrupted_once = true;
                }
                pending.clear();
            }
            Err(ReadlineError::Eof) => break 0,
            Err(error) => {
                eprintln!("input error: {error}");
                break 1;
            }
        }
    };
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    code
}

fn paint_error(colour: bool, text: &str) -> String {
    if colour {
        format!("\u{1b}[31m{text}\u{1b}[39m")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl CompletionSource for Fixed {
        fn collection_names(&self) -> Vec<String> {
            vec!["people".into(), "pets".into(), "my-things".into()]
        }
        fn global_names(&self) -> Vec<String> {
            vec![
                "db".into(),
                "print".into(),
                "printjson".into(),
                "ObjectId".into(),
            ]
        }
    }

    #[test]
    fn completes_collections_methods_and_globals() {
        assert_eq!(
            complete("db.pe", &Fixed),
            (0, vec!["db.people".into(), "db.pets".into()])
        );
        let (start, found) = complete("x = db.ge", &Fixed);
        assert_eq!(start, 4);
        assert!(
            found.contains(&"db.getName".to_string())
                && found.contains(&"db.getSiblingDB".to_string())
        );
        assert_eq!(
            complete("db.people.insertO", &Fixed),
            (0, vec!["db.people.insertOne".into()])
        );
        assert_eq!(
            complete("db.people.find({}).so", &Fixed),
            (18, vec![".sort".into()])
        );
        assert_eq!(
            complete("pri", &Fixed),
            (0, vec!["print".into(), "printjson".into()])
        );
        assert_eq!(complete("show co", &Fixed), (5, vec!["collections".into()]));
        assert!(
            complete("db.my-", &Fixed).1.is_empty(),
            "names that are not identifiers are not offered"
        );
        assert!(complete("", &Fixed).1.is_empty());
    }
}
