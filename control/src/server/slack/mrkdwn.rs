//! Markdown (what agents write) to Slack's mrkdwn, and long answers cut into messages
//! Slack accepts. Pure.

/// The most characters one message carries. Slack truncates `text` past 40,000 characters
/// and advises at most 4,000; we stay below that so no part is ever `msg_too_long`.
pub const MAX_CHARS: usize = 3_900;

/// Converts Markdown to mrkdwn: `**b**` → `*b*`, `*i*` → `_i_`, `~~s~~` → `~s~`,
/// `[t](u)` → `<u|t>`, headings → bold lines, list bullets → `•`, fenced code kept (its
/// language tag dropped); `&`, `<`, `>` escaped everywhere but in a leading `>` quote.
pub fn to_mrkdwn(md: &str) -> String {
    let mut out = String::with_capacity(md.len() + 16);
    let mut fenced = false;
    for (i, line) in md.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            fenced = !fenced;
            out.push_str("```");
            if !fenced {
                out.push_str(&escape(trimmed.trim_start_matches('`')));
            }
            continue;
        }
        if fenced {
            out.push_str(&escape(line));
            continue;
        }
        out.push_str(&block(line));
    }
    out
}

/// One line outside code: headings, bullets, quotes, then the inline marks.
fn block(line: &str) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let body = line.trim_start();
    let hashes = body.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) && body[hashes..].starts_with(' ') {
        let title = body[hashes..].trim().trim_end_matches('#').trim();
        return format!("{indent}*{}*", inline(&title.replace("**", "")));
    }
    for bullet in ["- ", "* ", "+ "] {
        if let Some(rest) = body.strip_prefix(bullet) {
            return format!("{indent}• {}", inline(rest));
        }
    }
    if let Some(rest) = body.strip_prefix("> ").or(body.strip_prefix(">")) {
        return format!("{indent}> {}", inline(rest));
    }
    format!("{indent}{}", inline(body))
}

/// Inline marks, outside inline code spans (which are kept, escaped).
fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(&escape(part));
        } else {
            out.push_str(&marks(&links(part)));
        }
    }
    out
}

/// `[text](url)` → `<url|text>`; Slack's own `<…>` tokens (mentions `<@U1>`, channels
/// `<#C1>`, `<!here>`, links `<https://…|label>`) kept; everything else escaped.
fn links(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let token = rest[open..].find('>').map(|end| &rest[open..=open + end]);
        let keep = token.filter(|t| {
            let inner = &t[1..t.len() - 1];
            let kinds = ["@", "#", "!", "http://", "https://", "mailto:"];
            kinds.iter().any(|k| inner.starts_with(k))
                && inner.len() > 1
                && !inner.contains(['<', '\n'])
        });
        match keep {
            Some(t) => {
                out.push_str(&md_links(&rest[..open]));
                out.push_str(t);
                rest = &rest[open + t.len()..];
            }
            None => {
                out.push_str(&md_links(&rest[..=open]));
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(&md_links(rest));
    out
}

/// `[text](url)` → `<url|text>`; everything else escaped.
fn md_links(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let parsed = after.find("](").and_then(|close| {
            let url_part = &after[close + 2..];
            let end = url_part.find(')')?;
            let url = &url_part[..end];
            let ok = !url.is_empty() && !url.contains(char::is_whitespace) && !url.contains('|');
            ok.then(|| (&after[..close], url, open + 1 + close + 2 + end + 1))
        });
        match parsed {
            Some((label, url, len)) => {
                out.push_str(&escape(&rest[..open]));
                out.push_str(&format!("<{}|{}>", escape(url), escape(label)));
                rest = &rest[len..];
            }
            None => {
                out.push_str(&escape(&rest[..open + 1]));
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(&escape(rest));
    out
}

/// Bold, italic and strike marks (links already converted, so `<…|…>` passes through).
fn marks(text: &str) -> String {
    // Bold first, through a mark no text contains, so its stars are not read as italics.
    const BOLD: char = '\u{E000}';
    let text = pairs(text, "**", &BOLD.to_string());
    let text = pairs(&text, "__", &BOLD.to_string());
    let text = pairs(&text, "~~", "~");
    let text = pairs(&text, "*", "_");
    text.replace(BOLD, "*")
}

/// Replaces each balanced pair of `mark` (an opening mark followed by a non-space, a closing
/// one preceded by a non-space) with `to`.
fn pairs(text: &str, mark: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(mark) {
        let inner_start = open + mark.len();
        let inner = &rest[inner_start..];
        let opens = inner.chars().next().is_some_and(|c| !c.is_whitespace());
        let close = inner.find(mark).filter(|&c| {
            c > 0
                && inner[..c]
                    .chars()
                    .last()
                    .is_some_and(|ch| !ch.is_whitespace())
        });
        match (opens, close) {
            (true, Some(c)) => {
                out.push_str(&rest[..open]);
                out.push_str(to);
                out.push_str(&inner[..c]);
                out.push_str(to);
                rest = &inner[c + mark.len()..];
            }
            _ => {
                out.push_str(&rest[..inner_start]);
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Slack's three control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts `text` into parts of at most `max` characters, at a paragraph, line or word break
/// when there is one in the second half of the part; a code block cut in two is closed at
/// the end of one part and reopened at the start of the next.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let max = max.max(64);
    let mut parts = Vec::new();
    let mut rest = text.trim_end().to_string();
    let mut reopen = false;
    while !rest.is_empty() {
        let mut chunk = if reopen {
            String::from("```\n")
        } else {
            String::new()
        };
        let room = max - chunk.chars().count() - 4;
        if rest.chars().count() <= room {
            chunk.push_str(&rest);
            parts.push(chunk);
            break;
        }
        let cut_at = byte_at(&rest, room);
        let window = &rest[..cut_at];
        let half = byte_at(window, room / 2);
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| window[half..].rfind(sep).map(|i| half + i + sep.len()))
            .unwrap_or(cut_at);
        let (head, tail) = rest.split_at(cut);
        chunk.push_str(head.trim_end_matches(' '));
        let fences = chunk
            .lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count();
        reopen = fences % 2 == 1;
        if reopen {
            chunk.push_str(if chunk.ends_with('\n') {
                "```"
            } else {
                "\n```"
            });
        }
        parts.push(chunk);
        rest = tail.trim_start_matches([' ', '\n']).to_string();
    }
    parts
}

/// The byte offset of the `n`th character (or the end).
fn byte_at(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_links_headings_and_lists() {
        let md = "# Result\n**Done**: see [the PR](https://x.test/pr/1) and *note* ~~old~~.\n- one\n* two\n> quoted <b>";
        assert_eq!(
            to_mrkdwn(md),
            "*Result*\n*Done*: see <https://x.test/pr/1|the PR> and _note_ ~old~.\n• one\n• two\n> quoted &lt;b&gt;"
        );
    }

    #[test]
    fn slack_tokens_pass_through() {
        assert_eq!(
            to_mrkdwn("<@U7>: ping <#C1> and <!here>, see <https://x.test/a|a> but 1 < 2 > 0"),
            "<@U7>: ping <#C1> and <!here>, see <https://x.test/a|a> but 1 &lt; 2 &gt; 0"
        );
        assert_eq!(to_mrkdwn("<b>bold</b>"), "&lt;b&gt;bold&lt;/b&gt;");
    }

    #[test]
    fn code_is_kept_but_escaped() {
        let md = "run `a **b** <c>`:\n```rust\nlet x = a && b; // **not bold**\n```\n2 * 3 * 4";
        assert_eq!(
            to_mrkdwn(md),
            "run `a **b** &lt;c&gt;`:\n```\nlet x = a &amp;&amp; b; // **not bold**\n```\n2 * 3 * 4"
        );
    }

    #[test]
    fn unbalanced_marks_and_brackets_stay_text() {
        assert_eq!(
            to_mrkdwn("a * b and [x] (y) and **open"),
            "a * b and [x] (y) and **open"
        );
        assert_eq!(to_mrkdwn("snake_case_name"), "snake_case_name");
    }

    #[test]
    fn long_text_splits_below_the_limit_at_breaks() {
        let para = "word ".repeat(300);
        let text = format!("{para}\n\n{para}\n\n{para}");
        let parts = split(&text, 2000);
        assert!(parts.len() >= 3, "{}", parts.len());
        for p in &parts {
            assert!(p.chars().count() <= 2000, "{}", p.chars().count());
        }
        let joined: String = parts
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            joined,
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    #[test]
    fn a_code_block_cut_in_two_is_closed_and_reopened() {
        let code = (0..400).map(|i| format!("line {i}\n")).collect::<String>();
        let text = format!("intro\n```\n{code}```\nafter");
        let parts = split(&text, 1000);
        assert!(parts.len() > 2);
        for p in &parts {
            assert!(p.chars().count() <= 1000);
            let fences = p.lines().filter(|l| l.starts_with("```")).count();
            assert_eq!(fences % 2, 0, "every part's code is closed: {p}");
        }
        assert!(parts.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn one_unbroken_word_is_cut_hard_and_multibyte_text_stays_whole() {
        let parts = split(&"é".repeat(5000), 1000);
        assert!(parts.iter().all(|p| p.chars().count() <= 1000));
        assert_eq!(parts.concat(), "é".repeat(5000));
    }
}
