//! URLs fit for logs and error messages: the password hidden, everything else kept.
//!
//! Every backend repeats the URL it was given in its errors (a URL that does not parse, a read
//! store on the wrong kind of database), and connection URLs carry passwords. One function hides
//! them for the whole store, so no backend can do it slightly differently.

/// `url` with its password, if it has one, replaced by `***`: `scheme://user:***@host…`. The
/// user, host, path and query stay, so a message still says where it was going. A URL without
/// credentials, credentials without a password, and anything that is not a URL come back as
/// they are.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    // Credentials sit in the authority, which ends where the path, query or fragment begins: an
    // `@` after that (in a query value) separates nothing.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The last `@` ends the user info, so a password holding a raw `@` is hidden whole.
    let Some((user_info, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_hidden_and_the_rest_kept() {
        assert_eq!(redact_password("postgres://stay:secret@db:5432/stay"), "postgres://stay:***@db:5432/stay");
        assert_eq!(redact_password("esdb://admin:changeit@h:2113?tls=false"), "esdb://admin:***@h:2113?tls=false");
        assert_eq!(redact_password("esdb+discover://admin:changeit@cluster"), "esdb+discover://admin:***@cluster");
        assert_eq!(redact_password("mysql://u:p@h/db"), "mysql://u:***@h/db");
    }

    #[test]
    fn a_password_with_an_at_sign_is_hidden_whole() {
        assert_eq!(redact_password("postgres://stay:p@ss@db/stay"), "postgres://stay:***@db/stay");
        assert_eq!(redact_password("postgres://stay:@db/stay"), "postgres://stay:***@db/stay");
    }

    #[test]
    fn an_at_sign_after_the_host_is_not_a_credential() {
        assert_eq!(redact_password("esdb://h:2113?x=a@b"), "esdb://h:2113?x=a@b");
        assert_eq!(redact_password("postgres://db/stay?options=a:b@c"), "postgres://db/stay?options=a:b@c");
        assert_eq!(redact_password("postgres://db#a:b@c"), "postgres://db#a:b@c");
        assert_eq!(redact_password("postgres://stay:secret@db/stay?x=a:b@c"), "postgres://stay:***@db/stay?x=a:b@c");
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        assert_eq!(redact_password("postgres://db:5432/stay"), "postgres://db:5432/stay");
        assert_eq!(redact_password("postgres://stay@db/stay"), "postgres://stay@db/stay");
        assert_eq!(redact_password("sqlite:///tmp/stay.db"), "sqlite:///tmp/stay.db");
    }

    #[test]
    fn nonsense_comes_back_as_it_is() {
        for nonsense in ["", "nonsense", "://", "a://", "a://@", "::@@//??"] {
            assert_eq!(redact_password(nonsense), nonsense);
        }
        assert_eq!(redact_password("://user:secret@"), "://user:***@");
    }
}
