//! Ferry's FTP client library. It is filled in by the client issue; for now it only
//! re-exports the shared wire formats so the workspace layout is in place.

pub use ferry_proto as proto;
