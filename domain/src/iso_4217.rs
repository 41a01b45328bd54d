//! The currency codes ISO 4217 lists as current (its "List One"), for checking the codes that
//! commands bring in.
//!
//! Kept by hand, sorted, from the standard's published list as amended up to 2026: national
//! currencies, the shared ones (XAF, XCD, XCG, XOF, XPF), funds codes (BOV, CHE, CHW, CLF, COU, MXV,
//! USN, UYI, UYW), precious metals, SDR and bond-market units, and the test and "no currency"
//! codes (XTS, XXX). Withdrawn codes (BGN, HRK, ANG, SLL, ZWL, VEF, MRO, …) are not here: they may
//! still be read back from recorded events, but no new price can use them. When ISO amends the
//! list, add or remove the code here and nowhere else.

/// Every current code, sorted.
const CURRENT: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD", "BIF", "BMD", "BND",
    "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY",
    "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP",
    "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD",
    "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN",
    "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN",
    "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD",
    "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX",
    "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB",
    "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW",
    "ZWG",
];

/// Whether `code` is a current ISO 4217 code.
pub(crate) fn is_current(code: &[u8; 3]) -> bool {
    CURRENT.binary_search_by(|listed| listed.as_bytes().cmp(code.as_slice())).is_ok()
}

/// Every current code, in order (for tests).
#[cfg(test)]
pub(crate) fn current_codes() -> &'static [&'static str] {
    CURRENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_without_duplicates_and_holds_three_upper_case_letters() {
        assert!(CURRENT.windows(2).all(|pair| pair[0] < pair[1]), "not strictly sorted");
        assert!(CURRENT.iter().all(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())));
    }

    #[test]
    fn current_codes_are_found_and_others_are_not() {
        for code in ["USD", "EUR", "GBP", "JPY", "CHF", "XOF", "AED", "ZWG", "XXX"] {
            assert!(is_current(&code.as_bytes().try_into().expect("three bytes")), "{code}");
        }
        for code in ["ZZZ", "AAA", "HRK", "BGN", "DEM", "FRF", "VEF", "SLL", "ANG"] {
            assert!(!is_current(&code.as_bytes().try_into().expect("three bytes")), "{code}");
        }
    }
}
