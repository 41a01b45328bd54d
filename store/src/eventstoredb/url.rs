//! The EventStoreDB connection string: our own parameter on it, and its errors without it.
//!
//! Stay reads one parameter of its own, `stayAggregateTypes`, from the connection string and
//! hands the rest to the client library; and it never repeats the library's parse errors
//! verbatim, since they quote the string, credentials included.

use eventstore::ClientSettingsParseError;

/// Splits our own `stayAggregateTypes` parameter off an EventStoreDB connection string (the
/// client library would ignore it with a warning). Answers the URL without it and its value.
pub(super) fn split_aggregate_types_param(url: &str) -> (String, Option<String>) {
    const PARAM: &str = "stayaggregatetypes";
    let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None) };
    let mut value = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, val) = pair.split_once('=').unwrap_or((pair, ""));
        if key.eq_ignore_ascii_case(PARAM) {
            // Commas may arrive percent-encoded; type names need nothing else.
            value = Some(val.replace("%2C", ",").replace("%2c", ","));
        } else {
            kept.push(pair);
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (url, value)
}

/// A connection-string error without the connection string: the library's message repeats it,
/// credentials included.
pub(super) fn describe(err: &ClientSettingsParseError) -> String {
    match err.error() {
        Some(url_error) => format!("not a URL ({url_error})"),
        None => err.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_url_parameter_is_taken_off_the_connection_string() {
        assert_eq!(split_aggregate_types_param("esdb://h:2113"), ("esdb://h:2113".into(), None));
        assert_eq!(
            split_aggregate_types_param("esdb://h:2113?tls=false&stayAggregateTypes=Room%2CSaga&nodePreference=leader"),
            ("esdb://h:2113?tls=false&nodePreference=leader".into(), Some("Room,Saga".into()))
        );
        assert_eq!(split_aggregate_types_param("esdb://h?stayaggregatetypes=*"), ("esdb://h".into(), Some("*".into())));
    }

    #[test]
    fn a_connection_string_error_does_not_repeat_the_credentials() {
        for url in ["esdb://admin:s3cret@db:notaport", "esdb://admin:s3cret@db:2113?nodePreference=nowhere"] {
            let err = url.parse::<eventstore::ClientSettings>().expect_err("not a connection string");
            let message = describe(&err);
            assert!(!message.contains("s3cret"), "{message}");
        }
    }
}
