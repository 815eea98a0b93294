//! Commands shared by the `centaur-gateway` and `centaur` binaries, so that both parse the
//! same arguments and print the same output from one place.

pub mod policy;

/// An error for the terminal: its message, then each cause whose text the line does not
/// already hold. (`{:#}` prints every cause again, and most of our errors embed their cause:
/// "certificate authority: ca.pem: No such file…" came out with the file named twice and
/// the OS error three times.)
pub fn describe(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("certificate authority: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_told_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "ca.pem: not found");
        let embedded = anyhow::Error::from(Outer(io()));
        assert_eq!(
            describe(&embedded),
            "certificate authority: ca.pem: not found"
        );
        let context = anyhow::Error::from(io()).context("loading the policy");
        assert_eq!(describe(&context), "loading the policy: ca.pem: not found");
    }
}
