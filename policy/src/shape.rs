//! Every structural error at once. The typed parser stops at the first unknown key or wrong
//! kind of value, which hides the other mistakes in the same file. When it fails, the file is
//! read again as a plain tree with positions and walked against the policy's JSON Schema (the
//! same one `schema` prints, generated from the types the parser reads): each unknown key,
//! unknown transform or source type, and mapping/list/scalar mix-up is reported with its
//! line:column and path. The entries at fault are then blanked out of the text (whole lines,
//! so every other position stays put) and the rest is parsed again, so that the semantic
//! errors come in the same report.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::error::{ConfigError, Pos};

/// A YAML node, positions kept.
#[derive(Debug)]
enum Node {
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    /// A scalar; its text when it is a string (tags are read from it).
    Scalar(Option<String>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(entry) = map.next_entry::<Spanned<String>, Spanned<Node>>()? {
            out.push(entry);
        }
        Ok(Node::Map(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            out.push(item);
        }
        Ok(Node::Seq(out))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Some(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
}

/// A structural problem, and the entry to blank out before parsing the rest.
#[derive(Debug)]
pub(crate) struct Problem {
    pub error: ConfigError,
    /// The entry at fault; `None` when it cannot be cut out line by line.
    pub cut: Option<Cut>,
}

/// An entry to cut out of the text, with its path.
#[derive(Debug, Clone)]
pub(crate) enum Cut {
    /// A mapping key (at this position) and its value.
    Key(Pos, String),
    /// A list item whose first key is at this position.
    Item(Pos, String),
}

fn pos<T>(s: &Spanned<T>) -> Pos {
    (s.referenced.line(), s.referenced.column())
}

/// Every structural problem in `text` against the policy's JSON `schema`, or nothing if it
/// is not YAML at all (the parser's own error then stands).
pub(crate) fn problems(text: &str, schema: &str) -> Vec<Problem> {
    let Ok(root) = serde_saphyr::from_str::<Spanned<Node>>(text) else {
        return Vec::new();
    };
    let schema: Value = serde_json::from_str(schema).unwrap_or(Value::Null);
    let mut w = Walk {
        defs: &schema["$defs"],
        out: Vec::new(),
    };
    w.node(&root, &schema, "", None);
    w.out
}

struct Walk<'a> {
    defs: &'a Value,
    out: Vec<Problem>,
}

impl<'a> Walk<'a> {
    /// `s`, its `$ref` followed.
    fn resolve(&self, mut s: &'a Value) -> &'a Value {
        let defs: &'a Value = self.defs;
        while let Some(r) = s["$ref"].as_str() {
            s = &defs[r.rsplit('/').next().unwrap_or("")];
        }
        s
    }

    fn report(&mut self, path: &str, at: Pos, message: String, cut: Option<Cut>) {
        self.out.push(Problem {
            error: ConfigError {
                path: path.to_string(),
                line: at.0,
                column: at.1,
                message,
                hint: None,
            },
            cut,
        });
    }

    /// Checks `node` against `schema`; `entry` is where the entry holding it starts.
    fn node(&mut self, node: &Spanned<Node>, schema: &'a Value, path: &str, entry: Option<Cut>) {
        let schema = self.resolve(schema);
        if let Some(variants) = schema["oneOf"].as_array() {
            return self.tagged(node, variants, path, entry);
        }
        if let Some(options) = schema["anyOf"].as_array() {
            let s = options.iter().find(|o| o["type"] != "null");
            if let (Some(s), false) = (s, matches!(node.value, Node::Scalar(_))) {
                return self.node(node, s, path, entry);
            }
            return;
        }
        let kinds: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return,
        };
        let found = match &node.value {
            Node::Map(_) => "object",
            Node::Seq(_) => "array",
            Node::Scalar(_) => "scalar",
        };
        let scalar = kinds.iter().any(|k| !matches!(*k, "object" | "array"));
        if !(kinds.contains(&found) || (found == "scalar" && scalar)) {
            let want = match kinds.first() {
                Some(&"object") => "a mapping",
                Some(&"array") => "a list",
                _ => "a single value",
            };
            let got = match found {
                "object" => "a mapping",
                "array" => "a list",
                _ => "a single value",
            };
            return self.report(
                path,
                pos(node),
                format!("expected {want}, found {got}"),
                None,
            );
        }
        match &node.value {
            Node::Map(entries) => self.map(entries, schema, path),
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    self.node(
                        item,
                        &schema["items"],
                        &item_path,
                        Some(Cut::Item(pos(item), item_path.clone())),
                    );
                }
            }
            Node::Scalar(_) => {}
        }
    }

    fn map(&mut self, entries: &[(Spanned<String>, Spanned<Node>)], schema: &'a Value, path: &str) {
        let props = &schema["properties"];
        for (k, v) in entries {
            let key_path = if path.is_empty() {
                k.value.clone()
            } else {
                format!("{path}.{}", k.value)
            };
            if let Some(s) = props.get(&k.value) {
                self.node(v, s, &key_path, Some(Cut::Key(pos(k), key_path.clone())));
            } else if schema["additionalProperties"] == false {
                let known: Vec<&str> = props
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let msg = format!(
                    "unknown key `{}` (expected one of: {})",
                    k.value,
                    known.join(", ")
                );
                self.report(
                    &key_path,
                    pos(k),
                    msg,
                    Some(Cut::Key(pos(k), key_path.clone())),
                );
            } else if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object())
            {
                self.node(
                    v,
                    extra,
                    &key_path,
                    Some(Cut::Key(pos(k), key_path.clone())),
                );
            }
        }
    }

    /// An internally tagged enum (`name:` of a transform, `type:` of a source): the variant
    /// its tag names, or an error at the tag listing the valid ones.
    fn tagged(
        &mut self,
        node: &Spanned<Node>,
        variants: &'a [Value],
        path: &str,
        entry: Option<Cut>,
    ) {
        let Node::Map(entries) = &node.value else {
            return self.report(path, pos(node), "expected a mapping".into(), None);
        };
        let tag_of = |v: &Value| {
            v["properties"].as_object().and_then(|p| {
                p.iter()
                    .find_map(|(k, s)| s["const"].as_str().map(|c| (k.clone(), c.to_string())))
            })
        };
        let Some((tag, _)) = variants.iter().find_map(tag_of) else {
            return;
        };
        let names: Vec<String> = variants.iter().filter_map(tag_of).map(|(_, c)| c).collect();
        let given = entries.iter().find(|(k, _)| k.value == tag);
        let value = given.map(|(_, v)| v);
        let chosen = value.and_then(|v| {
            let text = scalar_text(v)?;
            variants
                .iter()
                .find(|var| tag_of(var).is_some_and(|(_, c)| c == text))
        });
        match (given, chosen) {
            (_, Some(variant)) => self.map(entries, variant, path),
            (None, _) => self.report(
                path,
                pos(node),
                format!("missing `{tag}` (one of: {})", names.join(", ")),
                entry,
            ),
            (Some((_, v)), None) => {
                let given = scalar_text(v).unwrap_or("?");
                let why = NOT_BUILT
                    .iter()
                    .find(|(n, _)| *n == given)
                    .map(|(_, why)| {
                        format!(": iron-proxy's `{given}` is not supported here: {why}")
                    })
                    .unwrap_or_default();
                self.report(
                    &format!("{path}.{tag}"),
                    pos(v),
                    format!(
                        "unknown {tag} `{given}` (one of: {}){why}",
                        names.join(", ")
                    ),
                    entry,
                )
            }
        }
    }
}

/// iron-proxy's transform and source names that are not built here, and why.
const NOT_BUILT: [(&str, &str); 5] = [
    (
        "1password",
        "1Password documents no HTTP API for service accounts; run a Connect server and use `1password_connect`",
    ),
    ("judge", "no LLM judges requests; write allowlist rules"),
    (
        "annotate",
        "not built; the audit record has the request's host, method and path",
    ),
    (
        "body_capture",
        "not built: request bodies are never written to the audit trail",
    ),
    (
        "grpc",
        "not built; gRPC over HTTP/2 is judged by host and path like any request",
    ),
];

/// A string scalar's text.
fn scalar_text(n: &Spanned<Node>) -> Option<&str> {
    match &n.value {
        Node::Scalar(Some(s)) => Some(s),
        _ => None,
    }
}

/// `text` with the `cuts` replaced by empty lines (so every other line keeps its number),
/// and the paths of the list items removed; `None` if a cut is not a block-style entry that
/// starts its line.
pub(crate) fn without(text: &str, cuts: &[Cut]) -> Option<(String, Vec<String>)> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let mut blank = vec![false; lines.len()];
    let mut removed = Vec::new();
    for cut in cuts {
        let ((line, col), item, path) = match cut {
            Cut::Key(p, path) => (*p, false, path),
            Cut::Item(p, path) => (*p, true, path),
        };
        let i = usize::try_from(line).ok()?.checked_sub(1)?;
        let c = usize::try_from(col).ok()?.checked_sub(1)?;
        let before: String = lines.get(i)?.chars().take(c).collect();
        let block = before.chars().all(|ch| ch == ' ' || ch == '-');
        // The first key of a list item goes with its whole item.
        let item = item || before.contains('-');
        if !block || (item && !before.contains('-')) {
            return None;
        }
        if item {
            let parent = match cut {
                Cut::Key(..) => path.rsplit_once('.').map_or("", |(p, _)| p),
                Cut::Item(..) => path,
            };
            removed.push(parent.to_string());
        }
        blank[i] = true;
        for (j, l) in lines.iter().enumerate().skip(i + 1) {
            let body = l.trim_start_matches(' ');
            let indent = l.len() - body.len();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            // A key's value is indented deeper than the key; an item's own keys line up with
            // its first one.
            if indent > c || (item && indent == c) {
                blank[j] = true;
            } else {
                break;
            }
        }
    }
    for (l, b) in lines.iter_mut().zip(&blank) {
        if *b {
            l.clear();
        }
    }
    emptied(&mut lines);
    Some((lines.join("\n"), removed))
}

/// A key left with nothing under it (all its entries cut) would read as null: give it an
/// empty mapping instead.
fn emptied(lines: &mut [String]) {
    for i in 0..lines.len() {
        let l = &lines[i];
        let body = l.trim_start_matches([' ', '-']);
        if !body.ends_with(':') || body.starts_with('#') {
            continue;
        }
        let indent = l.len() - l.trim_start_matches(' ').len();
        let next = lines[i + 1..].iter().find(|n| {
            let t = n.trim_start();
            !t.is_empty() && !t.starts_with('#')
        });
        let childless = next.is_none_or(|n| n.len() - n.trim_start_matches(' ').len() <= indent);
        if childless {
            lines[i].push_str(" {}");
        }
    }
}

/// A path in the text with items removed, as a path in the original: each list index moved
/// past the removed items of its list that came before it.
pub(crate) fn original_path(path: &str, removed: &[String]) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let Ok(mut i) = rest[open + 1..close].parse::<usize>() else {
            out.push_str(&rest[open..=close]);
            rest = &rest[close + 1..];
            continue;
        };
        let list = out.clone();
        let mut gone: Vec<usize> = removed
            .iter()
            .filter_map(|r| {
                let idx = r.strip_prefix(list.as_str())?.strip_prefix('[')?;
                idx.strip_suffix(']')?.parse().ok()
            })
            .collect();
        gone.sort_unstable();
        for g in gone {
            if g <= i {
                i += 1;
            }
        }
        out.push_str(&format!("[{i}]"));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use crate::Config;

    /// An unknown key no longer hides the other mistakes: structural and semantic errors
    /// come in one report, each at its own line:column.
    #[test]
    fn every_error_at_once_with_its_place() {
        let text = "\
proxy:
  http_lisen: ':80'
  idle_timeout: 10s
tls:
  ca_cert: /c
  ca_key: /k
colour: blue
transforms:
  - name: allowlist
    config:
      domains: ['api.*.com', ok.com]
      hosts: [x.com]
  - name: firewall
    config: {}
  - name: secrets
    config:
      secrets:
        - source: {type: envv, var: K}
          rules: [{host: a.com}]
          replace: {proxy_value: P}
        - source: {type: env, var: K}
          rules: [{host: 'b.*.com'}]
          replace: {proxy_value: P}
";
        let e = Config::parse_placed(text).unwrap_err();
        let got: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        let want = [
            "2:3: proxy.http_lisen: unknown key `http_lisen`",
            "7:1: colour: unknown key `colour`",
            "11:17: transforms[0].config.domains[0]: `*` is only allowed",
            "12:7: transforms[0].config.hosts: unknown key `hosts`",
            "13:11: transforms[1].name: unknown name `firewall` (one of: allowlist, secrets",
            "18:26: transforms[2].config.secrets[0].source.type: unknown type `envv` (one of: env, file, vault, aws_sm, aws_ssm, 1password_connect)",
            "22:26: transforms[2].config.secrets[1].rules[0].host: `*` is only allowed",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in\n{}",
                got.join("\n")
            );
        }
        assert_eq!(got.len(), want.len(), "{}", got.join("\n"));
    }

    #[test]
    fn a_list_where_a_mapping_belongs_and_text_that_is_not_yaml() {
        let e =
            Config::parse_placed("proxy: [a, b]\ndns: {enabled: false}\nbogus: 1\n").unwrap_err();
        let got = e.to_string();
        assert!(
            got.contains("1:8: proxy: expected a mapping, found a list"),
            "{got}"
        );
        assert!(got.contains("3:1: bogus: unknown key"), "{got}");
        let e = Config::parse_placed("proxy: [unclosed\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "the YAML error alone: {e}");
    }

    /// `upstream.internal` (the route to the control plane that only the runner sets, past
    /// the deny ranges) has no YAML form: a policy file that tries it is refused (invariant 2).
    #[test]
    fn a_policy_file_cannot_route_a_name_past_the_deny_ranges() {
        let e =
            Config::parse_placed("upstream:\n  internal: {centaur.internal: '127.0.0.1:8700'}\n")
                .unwrap_err();
        assert!(
            e.to_string()
                .contains("2:3: upstream.internal: unknown key"),
            "{e}"
        );
    }
}
