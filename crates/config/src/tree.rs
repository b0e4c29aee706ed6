//! Reading a parsed TOML tree: typed values with their positions, unknown keys reported with a
//! suggestion, missing keys reported at their table, and every problem collected rather than
//! the first one returned.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::Problems;
use crate::files::{FileId, Pos};
use crate::suggest::did_you_mean;

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Located<T> {
    pub(crate) value: T,
    pub(crate) pos: Pos,
}

/// One value of the tree, known by the key it was found under.
#[derive(Clone, Copy)]
pub(crate) struct Node<'a, 'i> {
    file: FileId,
    key: &'a str,
    value: &'a Spanned<DeValue<'i>>,
}

/// One table of the tree, with a label for messages ("[deployment]", "agency \"maros-dinsos\"").
pub(crate) struct Table<'a, 'i> {
    file: FileId,
    label: String,
    start: usize,
    entries: &'a DeTable<'i>,
}

fn describe(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "a whole number",
        DeValue::Float(_) => "a decimal number",
        DeValue::Boolean(_) => "true or false",
        DeValue::Datetime(_) => "a date or time",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

impl<'a, 'i> Node<'a, 'i> {
    pub(crate) fn pos(&self) -> Pos {
        Pos {
            file: self.file,
            offset: self.value.span().start,
        }
    }

    pub(crate) fn key(&self) -> &'a str {
        self.key
    }

    fn wrong_type(&self, problems: &mut Problems, expected: &str) {
        problems.at(
            self.pos(),
            format!(
                "`{}` must be {expected}, not {}",
                self.key,
                describe(self.value.get_ref())
            ),
        );
    }

    pub(crate) fn string(&self, problems: &mut Problems) -> Option<Located<String>> {
        match self.value.get_ref() {
            DeValue::String(text) => Some(Located {
                value: text.to_string(),
                pos: self.pos(),
            }),
            _ => {
                self.wrong_type(problems, "a string in quotes");
                None
            }
        }
    }

    pub(crate) fn bool(&self, problems: &mut Problems) -> Option<bool> {
        match self.value.get_ref() {
            DeValue::Boolean(value) => Some(*value),
            _ => {
                self.wrong_type(problems, "true or false");
                None
            }
        }
    }

    pub(crate) fn integer(&self, problems: &mut Problems) -> Option<i64> {
        let parsed = match self.value.get_ref() {
            DeValue::Integer(integer) => {
                i64::from_str_radix(&integer.as_str().replace('_', ""), integer.radix()).ok()
            }
            _ => None,
        };
        if parsed.is_none() {
            self.wrong_type(problems, "a whole number");
        }
        parsed
    }

    /// A string or a TOML date/time literal, as text (the two are interchangeable in refbus
    /// files: `2026-01-01` and `"2026-01-01"` mean the same day).
    pub(crate) fn date_text(&self, problems: &mut Problems) -> Option<Located<String>> {
        match self.value.get_ref() {
            DeValue::String(text) => Some(Located {
                value: text.to_string(),
                pos: self.pos(),
            }),
            DeValue::Datetime(datetime) => Some(Located {
                value: datetime.to_string(),
                pos: self.pos(),
            }),
            _ => {
                self.wrong_type(problems, "a date (2026-01-01) or a string");
                None
            }
        }
    }

    pub(crate) fn items(&self, problems: &mut Problems) -> Vec<Node<'a, 'i>> {
        match self.value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|value| Node {
                    file: self.file,
                    key: self.key,
                    value,
                })
                .collect(),
            _ => {
                self.wrong_type(problems, "a list in brackets, e.g. [\"a\", \"b\"]");
                Vec::new()
            }
        }
    }

    /// A list of strings; items of another type are reported and skipped.
    pub(crate) fn strings(&self, problems: &mut Problems) -> Vec<Located<String>> {
        let items = self.items(problems);
        items
            .iter()
            .filter_map(|item| match item.value.get_ref() {
                DeValue::String(text) => Some(Located {
                    value: text.to_string(),
                    pos: item.pos(),
                }),
                other => {
                    problems.at(
                        item.pos(),
                        format!(
                            "each item of `{}` must be a string in quotes, not {}",
                            self.key,
                            describe(other)
                        ),
                    );
                    None
                }
            })
            .collect()
    }

    pub(crate) fn table(&self, problems: &mut Problems) -> Option<Table<'a, 'i>> {
        match self.value.get_ref() {
            DeValue::Table(entries) => Some(Table {
                file: self.file,
                label: format!("[{}]", self.key),
                start: self.value.span().start,
                entries,
            }),
            _ => {
                self.wrong_type(problems, "a table");
                None
            }
        }
    }

    /// The tables of an array of tables (`[[agency]]`).
    pub(crate) fn tables(&self, problems: &mut Problems) -> Vec<Table<'a, 'i>> {
        match self.value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .filter_map(|value| match value.get_ref() {
                    DeValue::Table(entries) => Some(Table {
                        file: self.file,
                        label: format!("[[{}]]", self.key),
                        start: value.span().start,
                        entries,
                    }),
                    other => {
                        problems.at(
                            Pos {
                                file: self.file,
                                offset: value.span().start,
                            },
                            format!(
                                "each item of `{}` must be a table, not {}",
                                self.key,
                                describe(other)
                            ),
                        );
                        None
                    }
                })
                .collect(),
            DeValue::Table(_) => {
                problems.at(
                    self.pos(),
                    format!(
                        "write [[{}]] with double brackets: there can be several of them",
                        self.key
                    ),
                );
                Vec::new()
            }
            _ => {
                self.wrong_type(problems, "a list of tables");
                Vec::new()
            }
        }
    }
}

impl<'a, 'i> Table<'a, 'i> {
    /// The document itself, as a table.
    pub(crate) fn root(file: FileId, document: &'a Spanned<DeTable<'i>>) -> Table<'a, 'i> {
        Table {
            file,
            label: "the top level of the file".to_owned(),
            start: 0,
            entries: document.get_ref(),
        }
    }

    pub(crate) fn pos(&self) -> Pos {
        Pos {
            file: self.file,
            offset: self.start,
        }
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Names the table in later messages, once its identity is known.
    pub(crate) fn set_label(&mut self, label: String) {
        self.label = label;
    }

    /// Reports every key not in `allowed`, with the nearest allowed key as a suggestion.
    pub(crate) fn allow_only(&self, allowed: &[&str], problems: &mut Problems) {
        for (key, _) in self.entries.iter() {
            let key_text: &str = key.get_ref();
            if allowed.contains(&key_text) {
                continue;
            }
            let advice = match did_you_mean(key_text, allowed.iter().copied()) {
                Some(near) => format!(" (did you mean `{near}`?)"),
                None => format!("; expected one of: {}", allowed.join(", ")),
            };
            problems.at(
                Pos {
                    file: self.file,
                    offset: key.span().start,
                },
                format!("unknown key `{key_text}` in {}{advice}", self.label),
            );
        }
    }

    pub(crate) fn get(&self, key: &'a str) -> Option<Node<'a, 'i>> {
        self.entries
            .iter()
            .find(|(name, _)| {
                let name: &str = name.get_ref();
                name == key
            })
            .map(|(_, value)| Node {
                file: self.file,
                key,
                value,
            })
    }

    pub(crate) fn required(&self, key: &'a str, problems: &mut Problems) -> Option<Node<'a, 'i>> {
        let node = self.get(key);
        if node.is_none() {
            problems.at(
                self.pos(),
                format!("missing required key `{key}` in {}", self.label),
            );
        }
        node
    }

    /// Every entry, for tables whose keys are names the administrator chooses (weekdays,
    /// services, roles).
    pub(crate) fn entries(&self) -> Vec<(Located<&'a str>, Node<'a, 'i>)> {
        self.entries
            .iter()
            .map(|(key, value)| {
                let name: &'a str = key.get_ref();
                (
                    Located {
                        value: name,
                        pos: Pos {
                            file: self.file,
                            offset: key.span().start,
                        },
                    },
                    Node {
                        file: self.file,
                        key: name,
                        value,
                    },
                )
            })
            .collect()
    }
}
