//! A Jamf Pro simulator: an HTTP server on 127.0.0.1 serving the documented responses kept
//! in `fixtures/jamf/`.
