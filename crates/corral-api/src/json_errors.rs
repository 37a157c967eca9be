//! Rewording serde's data errors for people: which field, what was expected, what came
//! (`field \`timeout\`: expected a number, got the string "5"`), never Rust type names such
//! as `f64` or `struct ExecuteRequest`.
//!
//! It only rewrites text; classifying body failures and rendering them per surface is
//! `body`'s and each surface's job. The binary uses it for its config file too.

/// The person-facing text for a serde data error at `path` (`.` for the body itself).
pub fn describe(path: &str, message: &str) -> String {
    let place = if path.is_empty() || path == "." {
        "the body".to_owned()
    } else {
        format!("field `{path}`")
    };
    // serde appends " at line L column C" for errors from serde_json; drop it.
    let message = strip_position(message);
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((got, expected)) = rest.split_once(", expected ") {
            return format!(
                "{place}: expected {}, got {}",
                expected_words(expected),
                got_words(got)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((got, expected)) = rest.split_once(", expected ") {
            return format!(
                "{place}: expected {}, got {}",
                expected_words(expected),
                got_words(got)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = rest.trim_matches('`');
        return if place == "the body" {
            format!("field `{field}` is required")
        } else {
            format!("{place}: field `{field}` is required")
        };
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (field, known) = match rest.split_once(", expected ") {
            Some((field, known)) => (field, Some(known)),
            None => (rest, None),
        };
        let field = field.trim_matches('`');
        let known = known
            .map(|known| {
                let known = known.trim_start_matches("one of ");
                format!(" (known fields: {known})")
            })
            .unwrap_or_default();
        return if place == "the body" {
            format!("unknown field `{field}`{known}")
        } else {
            format!("{place}: unknown field `{field}`{known}")
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return format!(
            "{place}: unknown value {}",
            rest.replace(", expected", "; expected")
        );
    }
    format!("{place}: {}", expected_words(&message))
}

/// [`describe`] without the place: `expected a number, got the string "5"`, for messages
/// that name their place already (a config file's line and column).
pub fn describe_value(message: &str) -> String {
    let text = describe(".", message);
    match text.strip_prefix("the body: ") {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) if message[index..].contains(" column ") => message[..index].to_owned(),
        _ => message.to_owned(),
    }
}

/// What serde expected, in words: `f64` → `a number`, `struct X` → `an object`.
fn expected_words(expected: &str) -> String {
    let words = [
        ("f64", "a number"),
        ("f32", "a number"),
        ("u64", "a non-negative integer"),
        ("u32", "a non-negative integer"),
        ("u16", "a non-negative integer"),
        ("u8", "a non-negative integer"),
        ("usize", "a non-negative integer"),
        ("i64", "an integer"),
        ("i32", "an integer"),
        ("isize", "an integer"),
        ("a boolean", "true or false"),
        ("a sequence", "a list"),
        ("a map", "an object"),
        ("a string", "a string"),
    ];
    let trimmed = expected.trim();
    for (rust, person) in words {
        if trimmed == rust {
            return person.to_owned();
        }
    }
    if trimmed.starts_with("struct ") || trimmed.starts_with("a map") {
        return "an object".to_owned();
    }
    if trimmed.starts_with("enum ") {
        return "one of the documented values".to_owned();
    }
    if trimmed.starts_with("a sequence") || trimmed.starts_with("tuple") {
        return "a list".to_owned();
    }
    if trimmed.starts_with("option") {
        return "a value or null".to_owned();
    }
    trimmed.replace("f64", "number").replace("u64", "integer")
}

/// What came, in words: `string "5"` → `the string "5"`, `integer \`5\`` → `the number 5`.
fn got_words(got: &str) -> String {
    let unquoted = |text: &str| text.trim_matches('`').to_owned();
    if let Some(text) = got.strip_prefix("string ") {
        return format!("the string {text}");
    }
    for prefix in ["integer ", "floating point "] {
        if let Some(number) = got.strip_prefix(prefix) {
            return format!("the number {}", unquoted(number));
        }
    }
    if let Some(value) = got.strip_prefix("boolean ") {
        return unquoted(value);
    }
    match got {
        "map" => "an object".to_owned(),
        "sequence" => "a list".to_owned(),
        "unit value" | "null" => "null".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn says_which_field_what_was_expected_and_what_came() {
        assert_eq!(
            describe(
                "timeout",
                "invalid type: string \"5\", expected f64 at line 1 column 30"
            ),
            "field `timeout`: expected a number, got the string \"5\""
        );
        assert_eq!(
            describe("code", "invalid type: integer `5`, expected a string"),
            "field `code`: expected a string, got the number 5"
        );
        assert_eq!(
            describe(
                ".",
                "invalid type: sequence, expected struct ExecuteRequest"
            ),
            "the body: expected an object, got a list"
        );
        assert_eq!(
            describe(".", "missing field `code`"),
            "field `code` is required"
        );
        assert_eq!(
            describe(".", "unknown field `cwd`, expected `code` or `timeout`"),
            "unknown field `cwd` (known fields: `code` or `timeout`)"
        );
        assert_eq!(
            describe(
                "limits.memory_bytes",
                "invalid value: integer `-1`, expected u64"
            ),
            "field `limits.memory_bytes`: expected a non-negative integer, got the number -1"
        );
    }

    #[test]
    fn without_the_place() {
        assert_eq!(
            super::describe_value("invalid type: string \"x\", expected u64"),
            "expected a non-negative integer, got the string \"x\""
        );
        assert_eq!(
            super::describe_value("unknown field `memory_bytes`, expected `memory_mib`"),
            "unknown field `memory_bytes` (known fields: `memory_mib`)"
        );
    }

    #[test]
    fn never_names_rust_types() {
        for message in [
            "invalid type: string \"x\", expected u64",
            "invalid type: map, expected f64",
            "invalid type: boolean `true`, expected struct Limits",
        ] {
            let text = describe("field", message);
            for rust in ["u64", "f64", "struct"] {
                assert!(!text.contains(rust), "{text}");
            }
        }
    }
}
