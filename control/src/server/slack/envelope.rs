//! What a Slack Events API body means to us: a URL-verification challenge, a message that
//! may become a turn, or something to ignore (with the reason). Pure.

use serde_json::Value;

/// A message addressed to the agent, or one in a thread it may have joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Slack's event id (`Ev…`).
    pub event_id: String,
    /// The workspace.
    pub team: String,
    /// The conversation.
    pub channel: String,
    /// The message's own timestamp (its id within the channel).
    pub ts: String,
    /// The thread's root: `thread_ts`, or the message itself when it starts a thread.
    pub thread_ts: String,
    /// Who wrote it.
    pub user: String,
    /// The text, the bot's mention and the flags taken out.
    pub text: String,
    /// `--harness NAME` / `--persona NAME`.
    pub harness: Option<String>,
    /// An `app_mention` or a direct message: a turn even in a thread the agent never joined.
    pub addressed: bool,
}

impl Inbound {
    /// One key per Slack message: the `app_mention` and `message` events of one post, and
    /// every retry of either, share it.
    pub fn dedupe_key(&self) -> String {
        format!("{}:{}:{}", self.team, self.channel, self.ts)
    }

    /// The conversation's thread key.
    pub fn thread_key(&self) -> String {
        format!("slack:{}:{}:{}", self.team, self.channel, self.thread_ts)
    }

    /// A reply inside a thread that started before it.
    pub fn is_reply(&self) -> bool {
        self.thread_ts != self.ts
    }
}

/// What a body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `url_verification`: answer with the challenge.
    Challenge(String),
    /// A message.
    Message(Inbound),
    /// Nothing to do, and why.
    Ignore(String),
}

/// Reads an Events API body (or a Socket Mode `events_api` payload).
pub fn parse(body: &[u8]) -> Result<Parsed, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    match v["type"].as_str() {
        Some("url_verification") => {
            return match v["challenge"].as_str() {
                Some(c) => Ok(Parsed::Challenge(c.to_string())),
                None => Err("url_verification without a challenge".into()),
            };
        }
        Some("event_callback") => {}
        Some(other) => return Ok(Parsed::Ignore(format!("envelope type {other}"))),
        None => return Err("the body has no type".into()),
    }
    let e = &v["event"];
    let kind = s(e, "type");
    let subtype = s(e, "subtype");
    let me = v["authorizations"][0]["user_id"].as_str().unwrap_or("");
    let dm = s(e, "channel_type") == "im";
    let ignore = |why: &str| Ok(Parsed::Ignore(why.to_string()));
    if kind != "app_mention" && kind != "message" {
        return ignore(&format!("event type {kind}"));
    }
    if e.get("bot_id").is_some_and(|b| !b.is_null()) || subtype == "bot_message" {
        return ignore("written by a bot");
    }
    if !subtype.is_empty() && subtype != "file_share" && subtype != "thread_broadcast" {
        return ignore(&format!("message subtype {subtype}"));
    }
    let user = s(e, "user");
    if user.is_empty() || (!me.is_empty() && user == me) {
        return ignore("written by the agent itself or by no user");
    }
    let ts = s(e, "ts");
    let channel = s(e, "channel");
    let team = [s(&v, "team_id"), s(e, "team")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    if ts.is_empty() || channel.is_empty() || team.is_empty() {
        return Err("the event lacks ts, channel or team".into());
    }
    let thread_ts = e["thread_ts"].as_str().unwrap_or(&ts).to_string();
    let addressed = kind == "app_mention" || dm;
    if !addressed && thread_ts == ts {
        return ignore("a channel message outside any thread, not addressed to the agent");
    }
    let (text, harness) = strip(&s(e, "text"), me, kind == "app_mention");
    if text.is_empty() {
        return ignore("an empty message");
    }
    Ok(Parsed::Message(Inbound {
        event_id: s(&v, "event_id"),
        team,
        channel,
        ts,
        thread_ts,
        user,
        text,
        harness,
        addressed,
    }))
}

/// The text without the agent's mention (`<@ME>`; in an `app_mention` without
/// `authorizations`, the first mention) and without `--harness NAME` / `--persona NAME`
/// (Slack clients may turn `--` into an em dash: both are read).
fn strip(text: &str, me: &str, mention: bool) -> (String, Option<String>) {
    let mut text = text.to_string();
    if !me.is_empty() {
        text = text.replace(&format!("<@{me}>"), "");
    } else if mention
        && let Some(start) = text.find("<@")
        && let Some(len) = text[start..].find('>')
    {
        text.replace_range(start..start + len + 1, "");
    }
    let mut harness = None;
    let mut words = Vec::new();
    let mut it = text.split(' ').peekable();
    while let Some(w) = it.next() {
        let flag = w.strip_prefix("--").or_else(|| w.strip_prefix('\u{2014}'));
        let inline = match flag.map(|f| f.split_once('=').unwrap_or((f, ""))) {
            Some(("harness" | "persona", v)) => v,
            _ => {
                words.push(w);
                continue;
            }
        };
        let value = if inline.is_empty() {
            it.next().unwrap_or("")
        } else {
            inline
        };
        if !value.is_empty() {
            harness = Some(value.to_string());
        }
    }
    (words.join(" ").trim().to_string(), harness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(e: Value) -> Value {
        json!({"type": "event_callback", "team_id": "T1", "event_id": "Ev1",
               "authorizations": [{"user_id": "UBOT", "is_bot": true}], "event": e})
    }

    fn parse_v(v: &Value) -> Parsed {
        parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_mention_becomes_a_turn_on_its_thread() {
        let p = parse_v(&event(
            json!({"type": "app_mention", "user": "U1", "channel": "C1",
            "ts": "100.1", "text": "<@UBOT> what is   up? --harness codex"}),
        ));
        let Parsed::Message(m) = p else {
            panic!("{p:?}")
        };
        assert_eq!(m.text, "what is   up?");
        assert_eq!(m.harness.as_deref(), Some("codex"));
        assert_eq!(m.thread_key(), "slack:T1:C1:100.1");
        assert_eq!(m.dedupe_key(), "T1:C1:100.1");
        assert!(m.addressed && !m.is_reply());
    }

    #[test]
    fn a_reply_keeps_its_threads_key_and_flags_take_both_spellings() {
        let p = parse_v(&event(
            json!({"type": "message", "user": "U1", "channel": "C1",
            "ts": "100.5", "thread_ts": "100.1", "text": "\u{2014}persona=reviewer look"}),
        ));
        let Parsed::Message(m) = p else {
            panic!("{p:?}")
        };
        assert_eq!(m.thread_key(), "slack:T1:C1:100.1");
        assert_eq!(
            (m.text.as_str(), m.harness.as_deref()),
            ("look", Some("reviewer"))
        );
        assert!(!m.addressed && m.is_reply());
    }

    #[test]
    fn bots_edits_and_channel_chatter_are_ignored() {
        let cases = [
            json!({"type": "message", "bot_id": "B1", "user": "U1", "channel": "C1", "ts": "1", "thread_ts": "0"}),
            json!({"type": "message", "subtype": "bot_message", "channel": "C1", "ts": "1"}),
            json!({"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "1"}),
            json!({"type": "message", "user": "UBOT", "channel": "C1", "ts": "1", "thread_ts": "0", "text": "x"}),
            json!({"type": "message", "user": "U1", "channel": "C1", "ts": "1", "text": "hello all"}),
            json!({"type": "app_mention", "user": "U1", "channel": "C1", "ts": "1", "text": "<@UBOT>"}),
            json!({"type": "reaction_added", "user": "U1"}),
        ];
        for c in cases {
            assert!(
                matches!(parse_v(&event(c.clone())), Parsed::Ignore(_)),
                "{c}"
            );
        }
    }

    #[test]
    fn a_direct_message_is_addressed() {
        let p = parse_v(&event(
            json!({"type": "message", "channel_type": "im", "user": "U1",
            "channel": "D1", "ts": "5.5", "text": "hi"}),
        ));
        let Parsed::Message(m) = p else {
            panic!("{p:?}")
        };
        assert!(m.addressed);
    }

    #[test]
    fn challenges_and_bad_bodies() {
        assert_eq!(
            parse(br#"{"type":"url_verification","challenge":"abc"}"#).unwrap(),
            Parsed::Challenge("abc".into())
        );
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"type":"url_verification"}"#).is_err());
        assert!(parse(br#"{"event":{}}"#).is_err());
        let no_team = json!({"type": "event_callback", "event": {"type": "app_mention",
            "user": "U1", "channel": "C1", "ts": "1", "text": "<@U9> hi"}});
        assert!(parse(no_team.to_string().as_bytes()).is_err());
    }
}
